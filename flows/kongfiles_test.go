package flows

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sidecall/sidecall/internal/testca"
	"gopkg.in/yaml.v3"
)

// loadWith loads src as kong.yml with the test registry (plus a stand-in
// pre-function recording its access chunks) and o's options.
func loadWith(t *testing.T, src string, o LoadOptions) (*Snapshot, error) {
	t.Helper()
	if o.Registry == nil {
		o.Registry = testRegistry()
		o.Registry.Register("pre-function", 1000000, func(b *Builder, raw *yaml.Node, at Path) (Plugin, error) {
			var c struct {
				Access []string `yaml:"access"`
			}
			b.Decode(raw, at, &c)
			return &testPlugin{name: "pre-function", header: strings.Join(c.Access, ";")}, nil
		})
	}
	if o.LookupEnv == nil {
		o.LookupEnv = func(string) (string, bool) { return "", false }
	}
	s, err := Load("kong.yml", []byte(src), o)
	if err == nil {
		t.Cleanup(s.Close)
	}
	return s, err
}

// warnings formats a snapshot's or a ConfigError's warnings one a line.
func warnLines(ws []FieldError) string {
	var out []string
	for _, w := range ws {
		out = append(out, w.Warning())
	}
	return strings.Join(out, "\n")
}

func wantWarnings(t *testing.T, ws []FieldError, want ...string) {
	t.Helper()
	got := warnLines(ws)
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("warnings lack %q:\n%s", w, got)
		}
	}
	if len(ws) != len(want) {
		t.Errorf("%d warnings, want %d:\n%s", len(ws), len(want), got)
	}
}

// Kong allows _comment and _ignore on every entity; decK's _konnect,
// _info and _workspace are accepted, each with one warning at its line.
func TestKongMetaKeysAccepted(t *testing.T) {
	s, err := loadWith(t, `_format_version: "3.0"
_konnect:
  control_plane_name: prod
_info:
  select_tags: [team-a]
_workspace: default
services:
  - name: svc
    _comment: the orders backend
    _ignore: [tags]
    url: http://127.0.0.1:1
    routes:
      - name: r
        _comment: public
        paths: ["/r"]
        plugins:
          - name: test-plugin
            _comment: tags the request
            _ignore: [config]
vaults:
  - name: env
    prefix: my-env
    _comment: kept
`, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantWarnings(t, s.WarningsAt,
		"kong.yml:2: _konnect: warning: _konnect selects a Konnect control plane",
		"kong.yml:4: _info: warning: _info (select_tags, defaults) is decK's",
		"kong.yml:6: _workspace: warning: _workspace is ignored")
	if got := names(s.RouteByName("r").Pipeline); got != "test-plugin@route" {
		t.Errorf("pipeline %s", got)
	}
}

// A service with url and protocol/host/port/path: the url wins, and the
// warning names the fields that said something else.
func TestServiceURLWins(t *testing.T) {
	s, err := loadWith(t, `_format_version: "3.0"
services:
  - name: svc
    url: https://orders.internal:8443/v1
    protocol: http
    host: other.internal
    port: 8443
    path: /v1
`, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u := s.Services["svc"].URL.String(); u != "https://orders.internal:8443/v1" {
		t.Errorf("url %s", u)
	}
	wantWarnings(t, s.WarningsAt, "kong.yml:4: services[0].url: warning: url wins, as in Kong: protocol, host ignored")
	// Fields that agree with the url are no warning.
	s, err = loadWith(t, "services: [{name: s, url: \"http://h:80/p\", host: h, port: 80, protocol: http, path: /p}]\n", LoadOptions{})
	if err != nil || len(s.WarningsAt) != 0 {
		t.Errorf("err %v, warnings %v", err, s.WarningsAt)
	}
}

// Top-level credential sections are ignored like consumers: one warning
// each, at the section's line.
func TestCredentialSectionsIgnored(t *testing.T) {
	var src strings.Builder
	src.WriteString("_format_version: \"3.0\"\nconsumers: [{username: ann}]\n")
	var want []string
	want = append(want, `kong.yml:2: consumers: warning: section "consumers" is ignored`)
	for i, sec := range credentialSections {
		src.WriteString(sec + ":\n  - consumer: ann\n    key: x\n")
		want = append(want, "kong.yml:"+strconv.Itoa(3+3*i)+": "+sec+`: warning: section "`+sec+`" is ignored: sidecall has no consumers`)
	}
	s, err := loadWith(t, src.String(), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantWarnings(t, s.WarningsAt, want...)
}

// partials on a disabled plugin are kept as written; on an enabled one
// they are refused.
func TestPluginPartials(t *testing.T) {
	src := `_format_version: "3.0"
partials:
  - name: shared-redis
    type: redis-ee
plugins:
  - name: top-plugin
    enabled: false
    partials:
      - name: shared-redis
`
	if _, err := loadWith(t, src, LoadOptions{}); err != nil {
		t.Fatalf("disabled plugin with partials: %v", err)
	}
	_, err := loadWith(t, strings.Replace(src, "enabled: false", "enabled: true", 1), LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), "kong.yml:9: plugins[0].partials: partials are not supported") {
		t.Errorf("enabled plugin with partials: %v", err)
	}
}

// A plugin nested in a service that names a route has decK's
// service+route scope: it runs on that route only, before the service's
// own instance of the same plugin.
func TestServicePluginNamingRoute(t *testing.T) {
	s, err := loadWith(t, `_format_version: "3.0"
services:
  - name: svc
    url: http://127.0.0.1:1
    routes:
      - name: a
        paths: ["/a"]
      - name: b
        paths: ["/b"]
    plugins:
      - name: test-plugin
        route: a
      - name: low-plugin
        route: {name: b}
        service: svc
`, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(s.RouteByName("a").Pipeline); got != "test-plugin@route+service" {
		t.Errorf("route a: %s", got)
	}
	if got := names(s.RouteByName("b").Pipeline); got != "low-plugin@route+service" {
		t.Errorf("route b: %s", got)
	}
	_, err = loadWith(t, "services:\n  - name: svc\n    url: http://h\n    plugins:\n      - name: test-plugin\n        route: nope\n", LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), `kong.yml:6: services[0].plugins[0].route: no route named "nope"`) {
		t.Errorf("missing route: %v", err)
	}
}

// A consumer-scoped plugin that is disabled is skipped; an enabled one is
// still refused (sidecall has no consumers).
func TestDisabledConsumerPlugin(t *testing.T) {
	src := "consumers: [{username: ann}]\nplugins:\n  - name: top-plugin\n    consumer: ann\n    enabled: false\n"
	if _, err := loadWith(t, src, LoadOptions{}); err != nil {
		t.Fatalf("disabled: %v", err)
	}
	if _, err := loadWith(t, strings.Replace(src, "false", "true", 1), LoadOptions{}); err == nil || !strings.Contains(err.Error(), "consumer-scoped") {
		t.Errorf("enabled: %v", err)
	}
}

// pre-function's functions is read as access in 1.1 and 2.1 files (with a
// warning) and refused, with the rename to make, in 3.x files.
func TestLegacyFunctions(t *testing.T) {
	src := `_format_version: "2.1"
plugins:
  - name: pre-function
    config:
      functions:
        - kong.service.request.set_header("x-a", "1")
`
	s, err := loadWith(t, src, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Global.Instances[0].Plugin.(*testPlugin); p.header != `kong.service.request.set_header("x-a", "1")` {
		t.Errorf("access chunks %q", p.header)
	}
	wantWarnings(t, s.WarningsAt, "kong.yml:5: plugins[0].config.functions: warning: functions is Kong 2.x's name for access: read as access")
	_, err = loadWith(t, strings.Replace(src, "2.1", "3.0", 1), LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), `kong.yml:5: plugins[0].config.functions: functions was removed in Kong 3.0 (this file is _format_version "3.0"): rename it to access`) {
		t.Errorf("3.0: %v", err)
	}
}

// An unsupported vault entity, whatever its config, is one warning; only a
// reference to it is an error, naming the vault's type.
func TestUnsupportedVaultEntity(t *testing.T) {
	src := `_format_version: "3.0"
vaults:
  - name: hcv
    prefix: hashi
    description: production secrets
    config:
      protocol: https
      host: vault.internal
      port: 8200
      mount: secret
      kv: v2
      token: s.abc
`
	s, err := loadWith(t, src, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantWarnings(t, s.WarningsAt, `kong.yml:3: vaults[0]: warning: vault "hashi" (hcv) is not supported by sidecall`)
	_, err = loadWith(t, src+"plugins:\n  - name: top-plugin\n    config: {header_name: \"{vault://hashi/h}\"}\n", LoadOptions{})
	var ce *ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 1 || !strings.Contains(ce.Problems[0].String(), `kong.yml:15: plugins[0].config.header_name: vault reference "{vault://hashi/h}": vault "hashi" is a hcv vault, which sidecall does not support`) {
		t.Errorf("reference: %v", err)
	}
	if ce != nil && len(ce.Warnings) != 1 {
		t.Errorf("a failed load keeps its warnings: %v", ce.Warnings)
	}
}

// A service whose host names an upstreams entry warns, naming it and
// what must provide its targets.
func TestUpstreamHostWarns(t *testing.T) {
	s, err := loadWith(t, `_format_version: "3.0"
upstreams:
  - name: orders-up
    targets: [{target: "10.0.0.1:8080"}]
services:
  - name: orders
    host: orders-up
    port: 8080
  - name: other
    url: http://other.internal
`, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantWarnings(t, s.WarningsAt,
		`kong.yml:2: upstreams: warning: section "upstreams" is ignored`,
		`kong.yml:7: services[0].host: warning: names upstream "orders-up", which sidecall ignores: Envoy's cluster for this service must provide its targets`)
}

// An unrendered decK template gets the hint in the error at its value,
// and a warning where the value loads as written.
func TestDeckTemplateHint(t *testing.T) {
	_, err := loadWith(t, `_format_version: "3.0"
services:
  - name: s
    url: ${{ env "DECK_ORDERS_URL" }}
    tags: ['${{ env "DECK_TEAM" }}']
`, LoadOptions{})
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v", err)
	}
	if want := `kong.yml:4: services[0].url: must be an absolute http(s) URL, got "${{ env \"DECK_ORDERS_URL\" }}" (an unrendered decK template: run "deck file render" first, or set DECK_ORDERS_URL)`; ce.Error() != want {
		t.Errorf("got\n%s\nwant\n%s", ce.Error(), want)
	}
	wantWarnings(t, ce.Warnings, `kong.yml:5: services[0].tags[0]: warning: an unrendered decK template: run "deck file render" first, or set DECK_TEAM; sidecall uses the text as written`)
	// Broken YAML from a template in a flow mapping gets the hint too.
	_, err = loadWith(t, "services: [{name: s, url: ${{ env \"DECK_URL\" }}}]\n", LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), "deck file render") {
		t.Errorf("yaml error: %v", err)
	}
}

// --unsupported-plugins warn: an enabled plugin sidecall lacks is one
// warning naming what does its job in Envoy; error (the default) refuses
// it with the same hint.
func TestUnsupportedPluginsWarn(t *testing.T) {
	src := `_format_version: "3.0"
plugins:
  - name: rate-limiting
    config: {minute: 5}
  - name: key-auth
  - name: acl
    config: {allow: [admins]}
  - name: prometheus
  - name: some-custom-plugin
  - name: jwt
    enabled: false
`
	s, err := loadWith(t, src, LoadOptions{UnsupportedPlugins: "warn"})
	if err != nil {
		t.Fatal(err)
	}
	wantWarnings(t, s.WarningsAt,
		`kong.yml:3: plugins[0].name: warning: plugin "rate-limiting" is not run by sidecall; in Envoy, use the local_ratelimit filter, or the global rate limit filter`,
		`kong.yml:5: plugins[1].name: warning: plugin "key-auth" is not run by sidecall; in Envoy, use the ext_authz filter`,
		`kong.yml:6: plugins[2].name: warning: plugin "acl" is not run by sidecall; in Envoy, use the RBAC filter`,
		`kong.yml:8: plugins[3].name: warning: plugin "prometheus" is not run by sidecall; in Envoy, use Envoy's stats`,
		`kong.yml:9: plugins[4].name: warning: plugin "some-custom-plugin" is not run by sidecall; in Envoy, use the equivalent filter`)
	_, err = loadWith(t, src, LoadOptions{})
	var ce *ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 5 {
		t.Fatalf("error mode: %v", err)
	}
	if want := `kong.yml:3: plugins[0].name: unknown plugin "rate-limiting" (sidecall has: low-plugin, pre-function, test-plugin, top-plugin); in Envoy, use the local_ratelimit filter, or the global rate limit filter with a rate limit service; set enabled: false to keep it in the file, or load with --unsupported-plugins warn`; ce.Problems[0].String() != want {
		t.Errorf("got\n%s\nwant\n%s", ce.Problems[0], want)
	}
	if _, err := loadWith(t, src, LoadOptions{UnsupportedPlugins: "ignore"}); err == nil {
		t.Error("a bad mode loaded")
	}
}

// docs/migration.md carries the table of what does each unsupported
// plugin's job in Envoy.
func TestMigrationDocListsEnvoyEquivalents(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "migration.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range EnvoyEquivalents() {
		if row := "| `" + e[0] + "` | " + e[1] + " |"; !strings.Contains(string(doc), row) {
			t.Errorf("docs/migration.md lacks the row %s", row)
		}
	}
}

// Offline: references are checked (syntax, the vault exists and is
// supported) without reading values, and checks of the values they stand
// for are skipped.
func TestOfflineVaultReferences(t *testing.T) {
	read := 0
	lookup := func(string) (string, bool) { read++; return "", false }
	src := `_format_version: "3.0"
vaults:
  - {name: env, prefix: kcs, config: {prefix: KCS_}}
  - {name: fs, prefix: secrets, config: {prefix: /run/secrets}}
services:
  - name: s
    url: "{vault://kcs/orders-url}"
plugins:
  - name: top-plugin
    config:
      header_name: "{vault://secrets/header}"
      generator: "{vault://env/GEN}"
`
	if _, err := loadWith(t, src, LoadOptions{Offline: true, LookupEnv: lookup}); err != nil {
		t.Fatalf("offline: %v", err)
	}
	if read != 0 {
		t.Errorf("offline read %d variables", read)
	}
	if _, err := loadWith(t, src, LoadOptions{LookupEnv: lookup}); err == nil {
		t.Error("online: loaded without the secrets")
	}
	for ref, want := range map[string]string{
		"{vault://nope/x}":           `unsupported vault "nope"`,
		"{vault://env/}":             "names no variable",
		"{vault://file/}":            "names no file",
		"{vault://file//etc/passwd}": "file is outside the config directory",
		"{vault://secrets/../x}":     "must name a file inside the vault's directory",
		"x{vault://env/A}":           "must be the whole value",
		"{vault://hashi/x}":          `vault "hashi" is a hcv vault`,
	} {
		bad := strings.Replace(src, "{vault://env/GEN}", ref, 1) + "  - {name: hcv, prefix: hashi}\n"
		bad = strings.Replace(bad, "  - {name: fs,", "  - {name: hcv, prefix: hashi}\n  - {name: fs,", 1)
		_, err := loadWith(t, bad, LoadOptions{Offline: true, LookupEnv: lookup})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", ref, err, want)
		}
	}
}

// A problem elsewhere in the file does not stop a plugin's own late checks
// (Builder.Failed answers per plugin inside a factory): one run reports
// both.
func TestFailedIsPerPlugin(t *testing.T) {
	r := testRegistry()
	r.Register("cyclic", 10, func(b *Builder, raw *yaml.Node, at Path) (Plugin, error) {
		if !b.Failed() {
			b.Errorf(at, "cycle found")
		}
		return &testPlugin{name: "cyclic"}, nil
	})
	_, err := Load("kong.yml", []byte(`services:
  - name: s
    url: http://h
    routes:
      - name: r
        methods: ["get"]
        paths: ["/"]
        plugins:
          - name: cyclic
`), LoadOptions{Registry: r})
	if err == nil || !strings.Contains(err.Error(), `invalid method "get"`) || !strings.Contains(err.Error(), "cycle found") {
		t.Errorf("got %v", err)
	}
}

// A plugin's Warnf with a leading path argument keeps the path and its
// line.
func TestWarnfKeepsPath(t *testing.T) {
	r := testRegistry()
	r.Register("warner", 10, func(b *Builder, raw *yaml.Node, at Path) (Plugin, error) {
		var c struct {
			Knob int `yaml:"knob"`
		}
		b.Decode(raw, at, &c)
		b.Warnf("%s: ignored", at.Key("knob"))
		return &testPlugin{name: "warner"}, nil
	})
	s, err := Load("kong.yml", []byte("plugins:\n  - name: warner\n    config:\n      knob: 3\n"), LoadOptions{Registry: r})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	wantWarnings(t, s.WarningsAt, "kong.yml:4: plugins[0].config.knob: warning: ignored")
	if len(s.Warnings) != 1 || s.Warnings[0] != "plugins[0].config.knob: ignored" {
		t.Errorf("Warnings %q", s.Warnings)
	}
}

const (
	svcID   = "0929d3ca-7920-4c59-885f-7627bb7b751c"
	routeID = "32854a63-b5c0-4b19-a30c-c0f0a36a73da"
)

// Admin API exports name services and routes by id, as {id: ...} or a
// plain UUID; a reference resolves by name, then by id.
func TestReferencesByID(t *testing.T) {
	s, err := loadWith(t, `_format_version: "3.0"
services:
  - name: orders
    id: `+svcID+`
    url: http://127.0.0.1:1
    plugins:
      - name: low-plugin
        service: {id: `+svcID+`}
routes:
  - name: a
    id: `+routeID+`
    service: `+svcID+`
    paths: ["/a"]
  - name: b
    service: {id: `+strings.ToUpper(svcID)+`}
    paths: ["/b"]
plugins:
  - name: test-plugin
    route: `+routeID+`
    service: {id: `+svcID+`}
  - name: top-plugin
    route: {id: `+routeID+`}
`, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantWarnings(t, s.WarningsAt)
	for _, r := range []string{"a", "b"} {
		if svc := s.RouteByName(r).Service; svc == nil || svc.Name != "orders" {
			t.Errorf("route %s: service %v", r, svc)
		}
	}
	if got := names(s.RouteByName("a").Pipeline); got != "top-plugin@route,test-plugin@route+service,low-plugin@service" {
		t.Errorf("route a: %s", got)
	}
	_, err = loadWith(t, "services: [{name: s, url: \"http://h\"}]\nplugins:\n  - name: test-plugin\n    service: {id: "+svcID+"}\n", LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), `kong.yml:4: plugins[0].service: no service with id "`+svcID+`"`) {
		t.Errorf("unknown id: %v", err)
	}
}

// created_at, updated_at and ws_id (Admin API exports) are accepted
// without a word on every entity.
func TestEntityTimestampsAccepted(t *testing.T) {
	meta := "created_at: 1753945980\n    updated_at: 1754142832\n    ws_id: 2d9f3c4e-1b2a-4c5d-8e7f-9a0b1c2d3e4f\n"
	s, err := loadWith(t, `_format_version: "3.0"
services:
  - name: svc
    `+meta+`    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: ["/r"]
        created_at: ~
        updated_at: 1754142832
        plugins:
          - name: test-plugin
            created_at: 1754143478
            updated_at: 1754143478
vaults:
  - name: env
    prefix: my-env
    `+meta, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantWarnings(t, s.WarningsAt)
}

// Kong needs no name on a service or route: the id stands in, with a
// warning (Envoy selects routes by name). Neither is an error saying what
// to add.
func TestIDAsName(t *testing.T) {
	s, err := loadWith(t, `_format_version: "3.0"
services:
  - id: `+svcID+`
    url: http://127.0.0.1:1
    routes:
      - id: `+routeID+`
        paths: ["/r"]
        plugins:
          - name: test-plugin
`, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantWarnings(t, s.WarningsAt,
		`kong.yml:3: services[0].id: warning: service has no name: sidecall names it by its id "`+svcID+`"`,
		`kong.yml:6: services[0].routes[0].id: warning: route has no name: sidecall names it by its id "`+routeID+`", which Envoy's route name (or x-sidecall-route) must then use`)
	r := s.RouteByName(routeID)
	if r == nil || r.Service != s.Services[svcID] || names(r.Pipeline) != "test-plugin@route" {
		t.Fatalf("route by id: %+v", r)
	}
	_, err = loadWith(t, "services:\n  - url: http://h\n    routes:\n      - paths: [/r]\n", LoadOptions{})
	for _, want := range []string{
		"kong.yml:2: services[0]: service needs a name or an id: add name:",
		"kong.yml:4: services[0].routes[0]: route needs a name or an id (Envoy selects routes by name): add name: and give Envoy's route the same name",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("no name, no id: got %v, want %q", err, want)
		}
	}
}

// The Kong entities sidecall does not run are one warning each, saying
// what they are and what to use in Envoy; Wasm filter chains on services
// and routes too.
func TestKongSectionsWarn(t *testing.T) {
	secs := []string{"cloned_plugins", "custom_plugins", "ai_models", "parameters", "filter_chains", "key_sets",
		"keys", "consumer_groups", "licenses", "rbac_roles", "workspaces", "certificates", "snis", "upstreams",
		"targets", "service_packages"}
	var src strings.Builder
	src.WriteString("_format_version: \"3.0\"\n")
	var want []string
	for i, sec := range secs {
		src.WriteString(sec + ":\n  - name: x\n")
		want = append(want, "kong.yml:"+strconv.Itoa(2+2*i)+": "+sec+`: warning: section "`+sec+`" is ignored: `+ignoredSections[sec])
	}
	line := 2 + 2*len(secs)
	src.WriteString(`services:
  - name: s
    url: http://127.0.0.1:1
    filter_chains:
      - filters: [{name: response_transformer, config: "{}"}]
    routes:
      - name: r
        paths: ["/r"]
        filter_chains: [{filters: [{name: f}]}]
      - name: r2
        paths: ["/r2"]
        filter_chains: []
`)
	want = append(want,
		"kong.yml:"+strconv.Itoa(line+4)+": services[0].filter_chains: warning: Wasm filter chains are not run by sidecall: Envoy runs Wasm filters itself",
		"kong.yml:"+strconv.Itoa(line+8)+": services[0].routes[0].filter_chains: warning: Wasm filter chains are not run by sidecall")
	s, err := loadWith(t, src.String(), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantWarnings(t, s.WarningsAt, want...)
	if ignoredSections["filter_chains"] == "" || !strings.Contains(ignoredSections["cloned_plugins"], "in Envoy") {
		t.Error("section texts")
	}
}

// decK's _plugin_configs: a plugin's _config merges the named config
// under its own, the plugin's keys winning at every level.
func TestPluginConfigsDedup(t *testing.T) {
	r := testRegistry()
	got := map[string]map[string]any{}
	r.Register("recorder", 10, func(b *Builder, raw *yaml.Node, at Path) (Plugin, error) {
		var c map[string]any
		b.Decode(raw, at, &c)
		got[b.Scope.Route] = c
		return &testPlugin{name: "recorder"}, nil
	})
	src := `_format_version: "3.0"
_plugin_configs:
  shared:
    minute: 10
    policy: local
    redis: {host: r1, port: 6379}
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - name: own
        paths: ["/own"]
        plugins:
          - name: recorder
            _config: shared
            config:
              minute: 5
              redis: {host: r2}
      - name: all
        paths: ["/all"]
        plugins:
          - name: recorder
            _config: shared
`
	s, err := loadWith(t, src, LoadOptions{Registry: r})
	if err != nil {
		t.Fatal(err)
	}
	wantWarnings(t, s.WarningsAt)
	for route, want := range map[string]string{
		"own": "map[minute:5 policy:local redis:map[host:r2 port:6379]]",
		"all": "map[minute:10 policy:local redis:map[host:r1 port:6379]]",
	} {
		if g := fmt.Sprint(got[route]); g != want {
			t.Errorf("%s: config %s, want %s", route, g, want)
		}
	}
	_, err = loadWith(t, strings.Replace(src, "_config: shared\n            config", "_config: nope\n            config", 1), LoadOptions{Registry: r})
	if err == nil || !strings.Contains(err.Error(), `kong.yml:15: services[0].routes[0].plugins[0]._config: no _plugin_configs entry named "nope"`) {
		t.Errorf("missing entry: %v", err)
	}
}

// clientCertEntity is a certificates entry (cert and key) for ca's key.
func clientCertEntity(t *testing.T, id string, ca *testca.CA) string {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	key := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	indent := func(s string) string { return strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n      ") }
	return "  - id: " + id + "\n    cert: |\n      " + indent(ca.PEM()) + "\n    key: |\n      " + indent(key) + "\n"
}

// tls_sans is Envoy's cluster's job (a warning). client_certificate is
// presented when sidecall calls the service itself (a shared flow);
// otherwise, or without its certificates entity, a warning.
func TestServiceTLSSANsAndClientCertificate(t *testing.T) {
	const certID = "9d3e2f1a-0b4c-4d5e-8f6a-7b8c9d0e1f2a"
	r := testRegistry()
	r.Register("flow", 10, func(b *Builder, raw *yaml.Node, at Path) (Plugin, error) {
		b.SharedFlow("secure", at)
		return &testPlugin{name: "flow"}, nil
	})
	src := `_format_version: "3.0"
services:
  - name: secure
    url: https://127.0.0.1:1
    client_certificate: {id: ` + certID + `}
    tls_sans:
      dnsnames: [localhost]
      uris: ["spiffe://example.test/admin"]
plugins:
  - name: flow
certificates:
` + clientCertEntity(t, certID, testca.New(t, "client", nil))
	s, err := loadWith(t, src, LoadOptions{Registry: r})
	if err != nil {
		t.Fatal(err)
	}
	wantWarnings(t, s.WarningsAt,
		"kong.yml:7: services[0].tls_sans: warning: Envoy's cluster checks these names (validation_context match_typed_subject_alt_names)",
		`kong.yml:11: certificates: warning: section "certificates" is ignored`)
	st := s.Services["secure"].TLS()
	if st.Client == nil || len(st.ClientConfig().Certificates) != 1 || !strings.Contains(st.Key(), "|client=") {
		t.Errorf("client certificate not honoured: %+v", st)
	}

	// Not a shared flow: Envoy's cluster presents it.
	s, err = loadWith(t, strings.Replace(src, "  - name: flow\n", "  - name: test-plugin\n", 1), LoadOptions{Registry: r})
	if err != nil {
		t.Fatal(err)
	}
	if w := warnLines(s.WarningsAt); !strings.Contains(w, "kong.yml:5: services[0].client_certificate: warning: Envoy presents the client certificate for the traffic it proxies: set tls_certificates in the cluster's UpstreamTlsContext") {
		t.Errorf("not a flow: %s", w)
	}
	// No such entity.
	s, err = loadWith(t, strings.Replace(src, "client_certificate: {id: "+certID, "client_certificate: {id: "+svcID, 1), LoadOptions{Registry: r})
	if err != nil {
		t.Fatal(err)
	}
	if w := warnLines(s.WarningsAt); !strings.Contains(w, `kong.yml:5: services[0].client_certificate: warning: no certificates entity with id "`+svcID+`": sidecall calls this service without a client certificate`) {
		t.Errorf("missing entity: %s", w)
	}
	if s.Services["secure"].TLS().Client != nil {
		t.Error("a client certificate from nowhere")
	}
	// Kong allows it with https only.
	_, err = loadWith(t, strings.Replace(src, "https://", "http://", 1), LoadOptions{Registry: r})
	if err == nil || !strings.Contains(err.Error(), "kong.yml:5: services[0].client_certificate: only for a service with protocol https, got http") {
		t.Errorf("http: %v", err)
	}
}

// condition (Kong 3.12) and consumer_group on a plugin that would run are
// errors naming what sidecall cannot do; with --unsupported-plugins warn
// the plugin is skipped with a warning; on a disabled or skipped plugin
// they are accepted.
func TestPluginConditionAndConsumerGroup(t *testing.T) {
	src := `_format_version: "3.0"
plugins:
  - name: test-plugin
    condition: service.name != "healthcheck"
  - name: top-plugin
    consumer_group: 8ca63651-4068-4baa-b2b9-08dc99c296e0
  - name: low-plugin
    enabled: false
    condition: route.name == "x"
    consumer_group: {id: 8ca63651-4068-4baa-b2b9-08dc99c296e0}
  - name: key-auth
    condition: route.name == "x"
    consumer_group: gold
`
	_, err := loadWith(t, src, LoadOptions{})
	var ce *ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Fatalf("error mode: %v", err)
	}
	for i, want := range []string{
		"kong.yml:4: plugins[0].condition: sidecall cannot evaluate plugin conditions: remove condition to run the plugin on every request of its scope, set enabled: false, or load with --unsupported-plugins warn to skip it",
		"kong.yml:6: plugins[1].consumer_group: consumer-group-scoped plugins are not supported: sidecall has no consumers or consumer groups",
		`kong.yml:11: plugins[3].name: unknown plugin "key-auth"`,
	} {
		if !strings.Contains(ce.Problems[i].String(), want) {
			t.Errorf("problem %d: got %s, want %s", i, ce.Problems[i], want)
		}
	}
	s, err := loadWith(t, src, LoadOptions{UnsupportedPlugins: "warn"})
	if err != nil {
		t.Fatal(err)
	}
	wantWarnings(t, s.WarningsAt,
		`kong.yml:4: plugins[0].condition: warning: plugin "test-plugin" is not run: sidecall cannot evaluate plugin conditions, and running it on every request would change what the file does`,
		`kong.yml:6: plugins[1].consumer_group: warning: consumer-group-scoped plugin "top-plugin" is not run: sidecall has no consumers or consumer groups`,
		`kong.yml:11: plugins[3].name: warning: plugin "key-auth" is not run by sidecall`)
	if len(s.Global.Instances) != 0 {
		t.Errorf("skipped plugins run: %s", names(s.Global))
	}
	// routes: and services: lists are not Kong's plugin schema.
	_, err = loadWith(t, "plugins:\n  - name: test-plugin\n    routes: [a, b]\n", LoadOptions{UnsupportedPlugins: "warn"})
	if err == nil || !strings.Contains(err.Error(), "kong.yml:3: plugins[0].routes: unknown field") {
		t.Errorf("routes list: %v", err)
	}
}
