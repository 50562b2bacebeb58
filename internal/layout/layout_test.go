package layout

import (
	"os/exec"
	"sort"
	"strings"
	"testing"
)

const mod = "github.com/sidecall/sidecall/"

// plugins are the leaf plugin packages (with their subpackages).
var plugins = []string{"correlation", "serverless", "flowcallout", "callout", "kafka", "transformer", "cors"}

// required must exist: a rule about a missing package would pass silently.
var required = append([]string{"flows", "flows/expr", "flows/lua", "processor", "plugins", "envoy",
	"envoy/envoytest", "internal/httpx", "internal/graph", "cmd/sidecall"}, plugins...)

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

func pluginOf(p string) string {
	for _, pl := range plugins {
		if under(p, pl) {
			return pl
		}
	}
	return ""
}

// TestImportRules: no plugin imports another plugin; flows imports no
// plugin; processor imports flows only (of ours); nothing imports cmd/...;
// the test harness reaches the plugins through package plugins. Test code
// inside a package (package p's own _test files) follows p's rules; only
// external test packages (p_test) may use the harness and every plugin.
func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-test", "-f", "{{.ImportPath}}|{{join .Imports \" \"}}", mod+"...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	seen := map[string]bool{}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, imports, _ := strings.Cut(line, "|")
		variant := ""
		if i := strings.Index(path, " ["); i >= 0 {
			path, variant = path[:i], path[i:]
		}
		pkg, ok := strings.CutPrefix(path, mod)
		if !ok || strings.HasSuffix(path, ".test") {
			continue
		}
		external := strings.HasSuffix(pkg, "_test")
		pkg = strings.TrimSuffix(pkg, "_test")
		seen[pkg] = true
		checked++
		for _, imp := range strings.Fields(imports) {
			dep, ours := strings.CutPrefix(imp, mod)
			if !ours {
				continue
			}
			if why := forbidden(pkg, dep, external); why != "" {
				t.Errorf("%s%s imports %s: %s", path, variant, dep, why)
			}
		}
	}
	for _, p := range required {
		if !seen[p] {
			t.Errorf("package %s is missing: its import rules cannot be checked", p)
		}
	}
	if checked < len(required) {
		t.Fatalf("checked %d packages", checked)
	}
}

// forbidden says why pkg may not import dep, or "" when it may.
func forbidden(pkg, dep string, external bool) string {
	if under(dep, "cmd") && !under(pkg, "cmd") {
		return "nothing imports cmd/..."
	}
	if external || under(pkg, "cmd") || under(pkg, "bench") || under(pkg, "examples") {
		return "" // end-to-end tests and programs may use everything else
	}
	switch {
	case under(pkg, "flows"):
		if !under(dep, "flows") && !under(dep, "internal") {
			return "flows is the engine: it imports only its subpackages and internal/"
		}
	case pkg == "processor":
		if dep != "flows" && !under(dep, "internal") {
			return "processor translates protobuf to flows and imports only flows"
		}
	case pkg == "plugins":
		if pluginOf(dep) == "" && dep != "flows" && !under(dep, "flows") {
			return "plugins lists the plugins and imports nothing else"
		}
	case under(pkg, "envoy/envoytest"):
		if dep != "plugins" && dep != "processor" && !under(dep, "envoy") && !under(dep, "flows") && !under(dep, "internal") {
			return "the harness builds its registry through plugins"
		}
	case under(pkg, "envoy"):
		if !under(dep, "envoy") && !under(dep, "internal") {
			return "the Envoy stand-in knows nothing of sidecall's code"
		}
	case pluginOf(pkg) != "":
		if p := pluginOf(dep); p != "" && p != pluginOf(pkg) {
			return "plugins never import each other"
		}
		if dep == "plugins" || dep == "processor" || under(dep, "envoy") {
			return "a plugin imports only flows, internal/ and proto/ (end-to-end tests go in an external _test package)"
		}
	}
	return ""
}

// TestForbiddenCatchesViolations: the rules above can fail.
func TestForbiddenCatchesViolations(t *testing.T) {
	bad := [][2]string{{"flows", "callout"}, {"callout", "kafka"}, {"callout/cache", "flowcallout"},
		{"processor", "correlation"}, {"envoy/envoytest", "cmd/sidecall"}, {"kafka", "plugins"}, {"flows/lua", "serverless"}}
	for _, c := range bad {
		if forbidden(c[0], c[1], false) == "" {
			t.Errorf("%s importing %s passes", c[0], c[1])
		}
	}
	ok := [][2]string{{"callout", "callout/cache"}, {"callout", "flows/expr"}, {"kafka", "proto/sidecall/kafka/v1"},
		{"processor", "flows"}, {"plugins", "kafka"}, {"callout", "internal/httpx"}}
	for _, c := range ok {
		if why := forbidden(c[0], c[1], false); why != "" {
			t.Errorf("%s importing %s refused: %s", c[0], c[1], why)
		}
	}
	if forbidden("callout", "plugins", true) != "" {
		t.Error("an external test package may use the harness")
	}
	sort.Strings(required)
}
