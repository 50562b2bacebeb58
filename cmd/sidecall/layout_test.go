package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportRules keeps ARCHITECTURE.md's layout: who may import whom.
func TestImportRules(t *testing.T) {
	const mod = "github.com/sidecall/sidecall/"
	rules := map[string]struct{ allowed, forbiddenExternal []string }{
		"flows":      {[]string{"flows/expr", "flows/lua"}, []string{"google.golang.org/grpc", "github.com/envoyproxy/", "github.com/IBM/sarama"}},
		"flows/expr": {[]string{"flows/lua"}, []string{"google.golang.org/grpc"}},
		"flows/lua":  {nil, []string{"google.golang.org/grpc"}},
		"processor":  {[]string{"flows", "flows/expr", "flows/lua"}, []string{"github.com/IBM/sarama"}},
		"callout":    {[]string{"flows", "flows/expr", "flows/lua", "callout/cache"}, []string{"github.com/IBM/sarama", "github.com/envoyproxy/"}},
		"kafka":      {[]string{"flows", "flows/expr", "flows/lua", "proto/sidecall/kafka/v1"}, []string{"github.com/envoyproxy/"}},
		"envoy":      {nil, nil},
	}
	for pkg, r := range rules {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", "../../"+pkg).CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "no Go files") || strings.Contains(string(out), "cannot find") || strings.Contains(string(out), "matched no packages") {
				continue // package not written yet
			}
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == mod+pkg {
				continue
			}
			if rest, ok := strings.CutPrefix(dep, mod); ok {
				ok := false
				for _, a := range r.allowed {
					if rest == a || strings.HasPrefix(rest, a+"/") && strings.HasPrefix(a, "proto") {
						ok = true
					}
				}
				if !ok {
					t.Errorf("%s must not import %s", pkg, rest)
				}
				continue
			}
			for _, f := range r.forbiddenExternal {
				if strings.HasPrefix(dep, f) {
					t.Errorf("%s must not depend on %s", pkg, dep)
				}
			}
		}
	}
}
