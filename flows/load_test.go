package flows

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite golden files")

type testPlugin struct {
	name   string
	prio   int
	header string // set to "1" when not empty
}

func (p *testPlugin) Name() string  { return p.name }
func (p *testPlugin) Priority() int { return p.prio }
func (p *testPlugin) Access(_ context.Context, x *Exchange) error {
	x.AddHeader("x-ran", p.name)
	if p.header != "" {
		x.SetHeader(p.header, "1")
	}
	return nil
}

// testRegistry has three plugins of high, middle and low priority; each
// adds x-ran: NAME, and header_name: H (vault references allowed) also
// sets H.
func testRegistry() *Registry {
	r := NewRegistry()
	for name, prio := range map[string]int{"top-plugin": 100001, "test-plugin": 500, "low-plugin": 10} {
		name, prio := name, prio
		r.Register(name, prio, func(b *Builder, raw *yaml.Node, at Path) (Plugin, error) {
			var cfg struct {
				Tag        string `yaml:"tag"`
				HeaderName string `yaml:"header_name"`
				Generator  string `yaml:"generator"`
			}
			b.Decode(raw, at, &cfg)
			switch cfg.Generator {
			case "", "uuid", "tracker":
			default:
				b.Errorf(at.Key("generator"), "must be one of uuid, tracker, got %q", cfg.Generator)
			}
			return &testPlugin{name: name, prio: prio, header: cfg.HeaderName}, nil
		})
	}
	return r
}

func TestBadConfigsGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) < 20 {
		t.Fatalf("want at least 20 bad configs, have %d", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := LoadFile(f, LoadOptions{Registry: testRegistry(), LookupEnv: func(string) (string, bool) { return "", false }})
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("want a ConfigError, got %v", err)
			}
			got := ce.Error() + "\n"
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("no golden file (run with -update): %v", err)
			}
			if got != string(want) {
				t.Errorf("problems differ\n--- got\n%s--- want\n%s", got, want)
			}
		})
	}
}

func mustLoad(t *testing.T, src string) *Snapshot {
	t.Helper()
	s, err := Load("kong.yml", []byte(src), LoadOptions{Registry: testRegistry()})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func names(p *Pipeline) string {
	var ns []string
	for _, in := range p.Instances {
		ns = append(ns, in.Name+"@"+scopeName(in.Scope))
	}
	return strings.Join(ns, ",")
}

func scopeName(s Scope) string {
	switch {
	case s.Route != "" && s.Service != "":
		return "route+service"
	case s.Route != "":
		return "route"
	case s.Service != "":
		return "service"
	}
	return "global"
}

func TestPluginPrecedence(t *testing.T) {
	s := mustLoad(t, `
services:
  - name: svc
    url: http://127.0.0.1:1
    plugins:
      - name: test-plugin
        config: {tag: service}
    routes:
      - name: r1
        paths: ["/r1"]
        plugins:
          - name: top-plugin
      - name: r2
        paths: ["/r2"]
      - name: r3
        paths: ["/r3"]
  - name: other
    url: http://127.0.0.1:2
    routes:
      - name: r4
        paths: ["/r4"]
plugins:
  - name: top-plugin
    config: {header_name: X-Global}
  - name: test-plugin
  - name: low-plugin
  - name: test-plugin
    route: r3
    service: svc
`)
	cases := map[string]string{
		"r1": "top-plugin@route,test-plugin@service,low-plugin@global",
		"r2": "top-plugin@global,test-plugin@service,low-plugin@global",
		"r3": "top-plugin@global,test-plugin@route+service,low-plugin@global",
		"r4": "top-plugin@global,test-plugin@global,low-plugin@global",
	}
	for route, want := range cases {
		if got := names(s.RouteByName(route).Pipeline); got != want {
			t.Errorf("%s: got %s, want %s", route, got, want)
		}
	}
	if got := names(s.Global); got != "top-plugin@global,test-plugin@global,low-plugin@global" {
		t.Errorf("global: %s", got)
	}
	if got := names(s.Services["svc"].Pipeline); got != "test-plugin@service" {
		t.Errorf("service pipeline: %s", got)
	}
}

func TestOrderingMovesPlugin(t *testing.T) {
	s := mustLoad(t, `
plugins:
  - name: top-plugin
  - name: low-plugin
    ordering:
      before:
        access: [top-plugin]
  - name: test-plugin
`)
	// Kahn's sort, highest priority first among the ready plugins.
	if got := names(s.Global); got != "test-plugin@global,low-plugin@global,top-plugin@global" {
		t.Errorf("got %s", got)
	}
}

func TestVaultResolution(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hdr"), []byte("X-From-File\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"MY_HEADER": "X-From-Env", "JSONV": `{"h":"X-Json"}`}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for ref, want := range map[string]string{
		"{vault://env/my-header}":                          "X-From-Env",
		"{vault://env/jsonv/h}":                            "X-Json",
		"{vault://file/hdr}":                               "X-From-File",
		"{vault://file/" + filepath.Join(dir, "hdr") + "}": "X-From-File",
	} {
		got, err := ResolveVault(ref, dir, lookup)
		if err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", ref, got, err, want)
		}
	}
	src := "plugins:\n  - name: top-plugin\n    config:\n      header_name: \"{vault://env/my-header}\"\n"
	s, err := Load(filepath.Join(dir, "kong.yml"), []byte(src), LoadOptions{Registry: testRegistry(), LookupEnv: lookup})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := NewExchange("id", Request{Method: "GET", Path: "/"}, nil)
	if err := s.Global.Run(context.Background(), PhaseAccess, x, nil); err != nil {
		t.Fatal(err)
	}
	if x.Request.Headers.Get("X-From-Env") == "" {
		t.Errorf("vault header name not used: %v", x.Request.Headers)
	}
	cfg := s.Redacted.(map[string]any)["plugins"].([]any)[0].(map[string]any)["config"].(map[string]any)
	if cfg["header_name"] != "{vault://env/my-header}" {
		t.Errorf("redacted config shows %v, want the reference", cfg["header_name"])
	}
}

func TestRedactsSecretKeys(t *testing.T) {
	s := mustLoad(t, `
services:
  - name: svc
    url: http://127.0.0.1:1
    tags: [password-is-a-tag]
plugins:
  - name: test-plugin
    config: {tag: "x"}
`)
	_ = s
	n := &yaml.Node{}
	if err := yaml.Unmarshal([]byte("redis: {password: hunter2, host: h}\n"), n); err != nil {
		t.Fatal(err)
	}
	got := redact(n.Content[0]).(map[string]any)["redis"].(map[string]any)
	if got["password"] != "<redacted>" || got["host"] != "h" {
		t.Errorf("redact: %v", got)
	}
}

func TestIgnoredSectionsWarn(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	s, err := Load("kong.yml", []byte("consumers: [{username: a}]\nupstreams: []\nservices: []\nvaults: [{name: hcv, prefix: my-hcv}]\n"),
		LoadOptions{Registry: testRegistry(), Log: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.Routes) != 0 {
		t.Fatal("unexpected routes")
	}
	var got []string
	for _, e := range logs.All() {
		got = append(got, e.Message)
	}
	want := []string{
		`consumers: section "consumers" is ignored: ` + ignoredSections["consumers"],
		`upstreams: section "upstreams" is ignored: ` + ignoredSections["upstreams"],
		`vaults[0]: vault "my-hcv" (hcv) is not supported by sidecall (env and fs are); references to it fail`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant one per ignored section:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func FuzzConfig(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.yaml")
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Load("fuzz.yml", data, LoadOptions{Registry: testRegistry(), LookupEnv: func(string) (string, bool) { return "", false }})
		if err == nil {
			s.Close()
			return
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || len(ce.Problems) == 0 {
			t.Fatalf("want a ConfigError with problems, got %v", err)
		}
	})
}

// Kong vault entities: env (with config.prefix and base64_decode) and fs
// resolve under their own prefix (such as kcsvault, an env vault).
func TestVaultEntities(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secrets", "hdr.txt"), []byte("X-From-FS\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secrets", "creds.json"), []byte(`{"name":"X-From-JSON"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TOKEN_URL": "X-Plain", "KCS_TOKEN_URL": "X-Prefixed", "B64": "WC1CYXNlNjQ="}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	load := func(vaults, header string) (*Snapshot, error) {
		src := "_format_version: \"3.0\"\nvaults:\n" + vaults +
			"plugins:\n  - name: top-plugin\n    config:\n      header_name: \"" + header + "\"\n"
		return Load(filepath.Join(dir, "kong.yml"), []byte(src), LoadOptions{Registry: testRegistry(), LookupEnv: lookup})
	}
	header := func(s *Snapshot) string {
		t.Helper()
		defer s.Close()
		x := NewExchange("id", Request{Method: "GET", Path: "/"}, nil)
		if err := s.Global.Run(context.Background(), PhaseAccess, x, nil); err != nil {
			t.Fatal(err)
		}
		for k := range x.Request.Headers {
			if k != "x-ran" {
				return k
			}
		}
		return ""
	}
	for _, c := range []struct{ vaults, ref, want string }{
		{"  - name: env\n    prefix: kcsvault\n", "{vault://kcsvault/TOKEN_URL}", "x-plain"},
		{"  - name: env\n    prefix: kcs\n    config: {prefix: KCS_}\n", "{vault://kcs/token-url}", "x-prefixed"},
		{"  - name: env\n    prefix: b64\n    config: {base64_decode: true}\n", "{vault://b64/b64}", "x-base64"},
		{"  - name: fs\n    prefix: fsv\n    config: {prefix: secrets}\n", "{vault://fsv/hdr.txt}", "x-from-fs"},
		{"  - name: fs\n    prefix: fsv\n    config: {prefix: " + filepath.Join(dir, "secrets") + "}\n", "{vault://fsv/creds.json/name}", "x-from-json"},
	} {
		s, err := load(c.vaults, c.ref)
		if err != nil {
			t.Errorf("%s: %v", c.ref, err)
			continue
		}
		if got := header(s); got != c.want {
			t.Errorf("%s: header %q, want %q", c.ref, got, c.want)
		}
	}
	for _, c := range []struct{ vaults, ref, want string }{
		{"  - name: hcv\n    prefix: my-hcv\n    config: {host: localhost}\n", "{vault://my-hcv/x}", "vault \"my-hcv\" is a hcv vault, which sidecall does not support"},
		{"  - name: fs\n    prefix: fsv\n    config: {prefix: secrets}\n", "{vault://fsv/../kong.yml}", "must name a file inside the vault's directory"},
		{"  - name: env\n    prefix: env\n", "{vault://env/TOKEN_URL}", "vaults[0].prefix: \"env\" is a built-in vault name"},
		{"  - name: env\n    prefix: a\n  - name: env\n    prefix: a\n", "{vault://a/TOKEN_URL}", "vaults[1].prefix: duplicate vault prefix \"a\""},
		{"  - name: env\n    prefix: a\n    config: {nope: 1}\n", "{vault://a/TOKEN_URL}", "vaults[0].config.nope"},
		{"  - name: fs\n    prefix: a\n", "{vault://a/x}", "vaults[0].config.prefix: required"},
	} {
		s, err := load(c.vaults, c.ref)
		if err == nil {
			s.Close()
			t.Errorf("%s: loaded, want error %q", c.ref, c.want)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "kong.yml:") {
			t.Errorf("%s: error %q, want it to contain %q and the file", c.ref, err, c.want)
		}
	}
}

// Secrets never appear in errors. A value that came from a
// vault shows as its reference in every problem, quoted or not.
func TestSecretsNotInConfigErrors(t *testing.T) {
	env := map[string]string{"SVC_URL": "not-a-url-s3cr3t", "GEN": "s3cr3t\"gen", "HDR": "X-S3cr3t-Header"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	src := `_format_version: "3.0"
services:
  - name: s
    url: "{vault://env/SVC_URL}"
plugins:
  - name: top-plugin
    config:
      header_name: "{vault://env/HDR}"
      generator: "{vault://env/GEN}"
`
	_, err := Load("kong.yml", []byte(src), LoadOptions{Registry: testRegistry(), LookupEnv: lookup})
	if err == nil {
		t.Fatal("loaded a bad url and generator")
	}
	msg := err.Error()
	for _, secret := range []string{"s3cr3t", "S3cr3t"} {
		if strings.Contains(msg, secret) {
			t.Errorf("a secret leaks into the error:\n%s", msg)
		}
	}
	for _, want := range []string{"services[0].url", "{vault://env/SVC_URL}", "plugins[0].config.generator", "{vault://env/GEN}"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
}
