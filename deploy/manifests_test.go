package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// TestPlainManifests decodes every plain YAML under deploy/istio and deploy/envoy-gateway
// strictly and deep-validates the EnvoyFilters.
func TestPlainManifests(t *testing.T) {
	root := repoRoot(t)
	files, _ := filepath.Glob(filepath.Join(root, "deploy", "istio", "*.yaml"))
	eg, _ := filepath.Glob(filepath.Join(root, "deploy", "envoy-gateway", "*.yaml"))
	files = append(files, eg...)
	if len(files) < 4 {
		t.Fatalf("want the Istio and Envoy Gateway manifests, got %v", files)
	}
	seen := map[string]int{}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(f, "sidecar-container-patch.yaml") {
				var d appsv1.Deployment
				if err := yaml.UnmarshalStrict(b, &d); err != nil {
					t.Fatal(err)
				}
				if errs := checkPodSpec(&d.Spec.Template.Spec, "127.0.0.1:9000"); len(errs) > 0 {
					// The plain patch has no named ports or CPU limits to keep it short; only
					// hardening and the listen addresses must hold.
					for _, e := range errs {
						if !strings.HasPrefix(e, "ports:") && !strings.HasPrefix(e, "resources:") {
							t.Error(e)
						}
					}
				}
				return
			}
			objs, err := decodeStream(splitDocs(t, b))
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				seen[o.Kind]++
				if o.Filter == nil {
					continue
				}
				for _, p := range o.Filter.GetConfigPatches() {
					seen[p.GetApplyTo().String()+"/"+p.GetMatch().GetContext().String()]++
					if v := p.GetPatch().GetValue(); v != nil {
						j, _ := v.MarshalJSON()
						if strings.Contains(string(j), `"disabled":true`) {
							seen["opt-out"]++
						}
						if strings.Contains(string(j), "x-sidecall-route") {
							seen["route-metadata"]++
						}
					}
				}
			}
		})
	}
	for _, k := range []string{"HTTP_FILTER/SIDECAR_INBOUND", "CLUSTER/SIDECAR_INBOUND", "HTTP_FILTER/GATEWAY", "HTTP_ROUTE/GATEWAY", "opt-out", "route-metadata", "EnvoyExtensionPolicy"} {
		if seen[k] == 0 {
			t.Errorf("no %s in the plain manifests", k)
		}
	}
}

// TestEnvoyFilterChecksFail feeds deliberately broken EnvoyFilters to the validator.
func TestEnvoyFilterChecksFail(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "istio", "sidecar-inbound.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct{ from, to, want string }{
		"no mode override": {"allow_mode_override: true", "allow_mode_override: false", "allow_mode_override"},
		"unknown field":    {"stat_prefix: sidecall", "stat_prefx: sidecall", "stat_prefx"},
		"no route name":    {"- xds.route_name", "- request.path", "xds.route_name"},
		"no http2":         {"http2_protocol_options: {}", "http_protocol_options: {}", "http2"},
		"cluster mismatch": {"cluster_name: sidecall-local", "cluster_name: elsewhere", "neither ADDed"},
		"after the router": {"operation: INSERT_BEFORE", "operation: INSERT_AFTER", "INSERT_BEFORE"},
		"bad port":         {"port_value: 9000", "port_value: 90000", "PortValue"},
		"bad type":         {"ext_proc.v3.ExternalProcessor", "ext_proc.v3.ExternalProcessorX", "ExternalProcessorX"},
		"invalid enum":     {"request_header_mode: SEND", "request_header_mode: SOMETIMES", "SOMETIMES"},
		"no selector":      {"labels:\n      app: orders", "labels: {}", "workloadSelector"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(string(good), c.from) {
				t.Fatalf("fixture no longer contains %q", c.from)
			}
			// The first occurrence only: for the cluster name, the filter's reference.
			bad := strings.Replace(string(good), c.from, c.to, 1)
			_, err := decodeStream(splitDocs(t, []byte(bad)))
			if err == nil {
				t.Fatal("the broken EnvoyFilter passed")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not mention %q", err, c.want)
			}
		})
	}
}

// TestComposeStack parses the compose file and checks that what it mounts and builds exists
// and that its Envoy config passes the bootstrap checks.
func TestComposeStack(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "deploy", "compose")
	b, err := os.ReadFile(filepath.Join(dir, "docker-compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Image   string   `json:"image"`
			Volumes []string `json:"volumes"`
			Build   *struct {
				Context    string `json:"context"`
				Dockerfile string `json:"dockerfile"`
			} `json:"build"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"envoy", "sidecall", "kafka", "orders"} {
		if _, ok := c.Services[want]; !ok {
			t.Errorf("compose has no %s service", want)
		}
	}
	for name, s := range c.Services {
		if s.Image == "" && s.Build == nil {
			t.Errorf("%s: no image or build", name)
		}
		for _, v := range s.Volumes {
			src := strings.SplitN(v, ":", 2)[0]
			if strings.HasPrefix(src, ".") && !fileExists(filepath.Join(dir, src)) {
				t.Errorf("%s: mounts %s, which does not exist", name, src)
			}
		}
		if s.Build != nil && !fileExists(filepath.Join(dir, s.Build.Context, s.Build.Dockerfile)) {
			t.Errorf("%s: build %s in %s does not exist", name, s.Build.Dockerfile, s.Build.Context)
		}
	}
	env, err := os.ReadFile(filepath.Join(dir, "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := validateBootstrap(env); err != nil {
		t.Fatal(err)
	}
	// Envoy's route names are sidecall's route names (route selection by xds.route_name).
	cfg, _ := os.ReadFile(filepath.Join(dir, "sidecall", "kong.yml"))
	for _, m := range regexp.MustCompile(`(?m)^\s+- name: (\S+-route)$`).FindAllStringSubmatch(string(cfg), -1) {
		if !strings.Contains(string(env), "name: "+m[1]) {
			t.Errorf("sidecall route %s has no Envoy route of that name", m[1])
		}
	}
}

// TestBootstrapChecksFail: the bootstrap checks catch an ext_proc placed after the router
// and a missing cluster.
func TestBootstrapChecksFail(t *testing.T) {
	env, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "compose", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(env)
	cases := map[string]string{
		"missing cluster":   strings.Replace(s, "envoy_grpc: {cluster_name: sidecall}", "envoy_grpc: {cluster_name: nowhere}", 1),
		"no mode override":  strings.Replace(s, "allow_mode_override: true", "allow_mode_override: false", 1),
		"unknown per-route": strings.Replace(s, "disabled: true", "disable: true", 1),
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			if bad == s {
				t.Fatal("fixture changed: replacement did not apply")
			}
			if err := validateBootstrap([]byte(bad)); err == nil {
				t.Fatal("broken bootstrap passed")
			}
		})
	}
}

// Dockerfile checks ----------------------------------------------------------------------

type dockerInstr struct {
	Cmd  string
	Args string
	Line int
}

// parseDockerfile is a small line parser: continuation lines joined, comments dropped.
func parseDockerfile(src string) []dockerInstr {
	var out []dockerInstr
	var cur strings.Builder
	start := 0
	for i, l := range strings.Split(src, "\n") {
		tl := strings.TrimSpace(l)
		if cur.Len() == 0 && (tl == "" || strings.HasPrefix(tl, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(tl, "\\") {
			cur.WriteString(strings.TrimSuffix(tl, "\\") + " ")
			continue
		}
		cur.WriteString(tl)
		f := strings.SplitN(cur.String(), " ", 2)
		in := dockerInstr{Cmd: strings.ToUpper(f[0]), Line: start}
		if len(f) == 2 {
			in.Args = strings.TrimSpace(f[1])
		}
		out = append(out, in)
		cur.Reset()
	}
	return out
}

// checkDockerfile returns the problems of a Dockerfile whose build context is root.
func checkDockerfile(src, root string) []string {
	var errs []string
	ins := parseDockerfile(src)
	froms, user, entry := 0, "", false
	for _, in := range ins {
		switch in.Cmd {
		case "FROM":
			froms++
			user = "" // USER is per stage: only the final stage's counts
		case "USER":
			user = in.Args
		case "HEALTHCHECK":
			errs = append(errs, "HEALTHCHECK present: Kubernetes probes /healthz and /readyz instead")
		case "ENTRYPOINT":
			entry = in.Args == `["/sidecall"]`
		case "COPY", "ADD":
			args := strings.Fields(in.Args)
			if slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--from") }) {
				continue
			}
			var paths []string
			for _, a := range args {
				if !strings.HasPrefix(a, "--") {
					paths = append(paths, a)
				}
			}
			if len(paths) < 2 {
				errs = append(errs, "line "+strconv.Itoa(in.Line)+": COPY needs a source and a destination")
				continue
			}
			for _, p := range paths[:len(paths)-1] {
				if !fileExists(filepath.Join(root, p)) {
					errs = append(errs, "line "+strconv.Itoa(in.Line)+": COPY source "+p+" does not exist in the build context")
				}
			}
		}
	}
	if froms < 2 {
		errs = append(errs, "not multi-stage")
	}
	if u := strings.SplitN(user, ":", 2)[0]; u == "" || u == "0" || u == "root" {
		errs = append(errs, "final stage must set a non-root USER, got "+strconv.Quote(user))
	}
	if !entry {
		errs = append(errs, `ENTRYPOINT must be ["/sidecall"]`)
	}
	last := ""
	for _, in := range ins {
		if in.Cmd == "FROM" {
			last = in.Args
		}
	}
	if !strings.HasPrefix(last, "gcr.io/distroless/") && last != "scratch" {
		errs = append(errs, "final stage must be distroless or scratch, got "+last)
	}
	return errs
}

func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	for _, e := range checkDockerfile(src, root) {
		t.Error(e)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w`, "-X main.version=", "org.opencontainers.image.source", `CMD ["serve", "-c", "/etc/sidecall/kong.yml"]`} {
		if !strings.Contains(src, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
	// Every package the binary is built from must be copied into the build stage.
	copied := map[string]bool{}
	for _, in := range parseDockerfile(src) {
		if in.Cmd == "COPY" && !strings.Contains(in.Args, "--from") {
			copied[strings.TrimSuffix(strings.Fields(in.Args)[0], "/")] = true
		}
	}
	cmd := exec.Command("go", "list", "-e", "-deps", "-f", "{{.ImportPath}}", "./cmd/sidecall")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/sidecall/sidecall/"
	for _, p := range strings.Fields(string(out)) {
		rel, ok := strings.CutPrefix(p, mod)
		if !ok {
			continue
		}
		top := strings.SplitN(rel, "/", 2)[0]
		if !copied[top] {
			t.Errorf("cmd/sidecall imports %s but the Dockerfile does not COPY %s/", p, top)
		}
	}
}

func TestDockerfileChecksFail(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	cases := map[string]string{
		"root user":      strings.Replace(src, "USER 65532:65532", "USER root", 1),
		"healthcheck":    src + "\nHEALTHCHECK CMD [\"/sidecall\", \"version\"]\n",
		"missing source": strings.Replace(src, "COPY flows/ flows/", "COPY flowz/ flows/", 1),
		"single stage":   src[strings.LastIndex(src, "FROM gcr.io"):],
	}
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			if bad == src {
				t.Fatal("fixture changed: replacement did not apply")
			}
			if len(checkDockerfile(bad, root)) == 0 {
				t.Fatal("the broken Dockerfile passed")
			}
		})
	}
}
