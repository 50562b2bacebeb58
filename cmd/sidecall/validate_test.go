package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// testPlugin names the flows tests' own plugins, which sidecall lacks.
var testPlugin = regexp.MustCompile(`\b(test|top|low)-plugin\b`)

func TestValidateExitCodes(t *testing.T) {
	bad, _ := filepath.Glob("../../flows/testdata/bad/*.yaml")
	if len(bad) < 20 {
		t.Fatalf("want >= 20 bad configs, have %d", len(bad))
	}
	for _, f := range bad {
		var out, errb bytes.Buffer
		if code := run([]string{"validate", "-c", f}, &out, &errb); code != 1 {
			t.Errorf("%s: exit %d, want 1\n%s", f, code, out.String())
		}
		golden, err := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".golden")
		if err != nil {
			t.Fatal(err)
		}
		// The CLI prints the same lines as the golden file, with the path as given.
		want := strings.ReplaceAll(string(golden), "testdata/bad/", "../../flows/testdata/bad/")
		src, _ := os.ReadFile(f)
		if testPlugin.Match(src) || strings.Contains(want, "sidecall has:") {
			continue // written for the flows test registry
		}
		if out.String() != want {
			t.Errorf("%s:\n got %s\nwant %s", f, out.String(), want)
		}
	}
	good, _ := filepath.Glob("../../examples/*.yaml")
	for _, f := range good {
		var out, errb bytes.Buffer
		if code := run([]string{"validate", "-c", f}, &out, &errb); code != 0 {
			t.Errorf("%s: exit %d, want 0\n%s%s", f, code, out.String(), errb.String())
		}
	}
}

func TestValidateReadsEnv(t *testing.T) {
	t.Setenv("SIDECALL_CONFIG", "../../flows/testdata/bad/bad_url.yaml")
	var out, errb bytes.Buffer
	if code := run([]string{"validate"}, &out, &errb); code != 1 || !strings.Contains(out.String(), "services[0].url") {
		t.Errorf("exit %d: %s %s", code, out.String(), errb.String())
	}
}

// Kong's untrusted_lua off: a config with Lua or $(...) is refused at load,
// one line per place; one without loads; a bad mode is a usage error.
func TestValidateUntrustedLuaOff(t *testing.T) {
	dir := t.TempDir()
	withLua := filepath.Join(dir, "lua.yml")
	if err := os.WriteFile(withLua, []byte(`_format_version: "3.0"
plugins:
  - name: pre-function
    config:
      access: ["kong.service.request.set_header('x-a', '1')"]
  - name: request-callout
    config:
      callouts:
        - name: c
          request:
            url: http://127.0.0.1:1/x
            headers:
              custom: {x-lit: plain, x-expr: "$(headers.host)"}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "--untrusted-lua", "off", "-c", withLua}, &out, &errb); code != 1 {
		t.Fatalf("exit %d, want 1\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{
		"lua.yml:5: plugins[0].config.access[0]: Lua is off (untrusted_lua off)",
		"plugins[1].config.callouts[0].request.headers.custom.x-expr: $(...) expressions run Lua, which is off (untrusted_lua off)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "x-lit") {
		t.Errorf("a literal value was refused:\n%s", out.String())
	}
	out.Reset()
	if code := run([]string{"validate", "-c", withLua}, &out, &errb); code != 0 {
		t.Errorf("sandbox (default): exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"validate", "--untrusted-lua", "off", "-c", "../../examples/kafka-request-reply.yaml"}, &out, &errb); code != 0 {
		t.Errorf("a config without Lua under off: exit %d\n%s", code, out.String())
	}
	errb.Reset()
	if code := run([]string{"serve", "--untrusted-lua", "on", "-c", withLua}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--untrusted-lua") {
		t.Errorf("serve --untrusted-lua on: exit %d, stderr %q; want 2 and a message", code, errb.String())
	}
}

// TestValidateShowsWarnings: what the loader accepts but ignores (a Kong
// section sidecall has no use for) is printed on stderr as FILE:LINE: PATH:
// warning: REASON with exit 0; --strict makes it exit 1.
func TestValidateShowsWarnings(t *testing.T) {
	file := filepath.Join(t.TempDir(), "kong.yml")
	if err := os.WriteFile(file, []byte(`_format_version: "3.0"
consumers:
  - username: ann
services:
  - name: s
    url: http://127.0.0.1:1
`), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-c", file}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errb.String())
	}
	if want := file + `:2: consumers: warning: section "consumers" is ignored`; !strings.Contains(errb.String(), want) {
		t.Errorf("stderr %q, want %q", errb.String(), want)
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"validate", "--strict", "-c", file}, &out, &errb); code != 1 || !strings.Contains(out.String(), "1 warnings (--strict)") {
		t.Errorf("--strict: exit %d, stdout %q", code, out.String())
	}
	// A file without warnings passes --strict.
	clean := filepath.Join(t.TempDir(), "kong.yml")
	if err := os.WriteFile(clean, []byte("_format_version: \"3.0\"\nservices: [{name: s, url: \"http://127.0.0.1:1\"}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := run([]string{"validate", "--strict", "-c", clean}, &out, &errb); code != 0 {
		t.Errorf("--strict on a clean file: exit %d", code)
	}
}

func writeKong(t *testing.T, src string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "kong.yml")
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// A file with problems and warnings: the problems on stdout, every warning
// on stderr with its line, in one run.
func TestValidateWarningsWithProblems(t *testing.T) {
	file := writeKong(t, `_format_version: "3.0"
_konnect:
  control_plane_name: prod
services:
  - name: s
    url: http://127.0.0.1:1
    host: elsewhere
    retries: lots
`)
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-c", file}, &out, &errb); code != 1 {
		t.Fatalf("exit %d", code)
	}
	if want := file + ":8: services[0].retries: must be an integer"; !strings.Contains(out.String(), want) {
		t.Errorf("stdout %q, want %q", out.String(), want)
	}
	want := file + ":2: _konnect: warning: _konnect selects a Konnect control plane for decK; sidecall ignores it\n" +
		file + ":6: services[0].url: warning: url wins, as in Kong: host ignored\n"
	if errb.String() != want {
		t.Errorf("stderr\n%s\nwant\n%s", errb.String(), want)
	}
}

// All stages report in one run: a bad route method does not hide a
// request-callout depends_on cycle in the same file.
func TestValidateAllStagesOneRun(t *testing.T) {
	file := writeKong(t, `_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - name: r
        methods: ["get"]
        paths: ["/a"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: a
                  depends_on: [b]
                  request: {url: "http://127.0.0.1:2/a"}
                - name: b
                  depends_on: [a]
                  request: {url: "http://127.0.0.1:2/b"}
`)
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-c", file}, &out, &errb); code != 1 {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `:7: services[0].routes[0].methods[0]: invalid method "get"`) || !strings.Contains(lines[1], "cycle") {
		t.Errorf("want the method and the cycle, once each:\n%s", out.String())
	}
}

// --unsupported-plugins warn loads a file with plugins sidecall lacks,
// one warning each; error (the default) refuses it; a bad value is a usage
// error. serve and try take the flag too.
func TestValidateUnsupportedPlugins(t *testing.T) {
	file := writeKong(t, `_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: ["/"]
        plugins:
          - name: rate-limiting
            config: {minute: 5, policy: local}
          - name: key-auth
          - name: correlation-id
`)
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-c", file}, &out, &errb); code != 1 || !strings.Contains(out.String(), "--unsupported-plugins warn") {
		t.Errorf("default: exit %d\n%s", code, out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"validate", "--unsupported-plugins", "warn", "-c", file}, &out, &errb); code != 0 {
		t.Fatalf("warn: exit %d\n%s%s", code, out.String(), errb.String())
	}
	for _, want := range []string{
		file + `:9: services[0].routes[0].plugins[0].name: warning: plugin "rate-limiting" is not run by sidecall; in Envoy, use the local_ratelimit filter`,
		file + `:11: services[0].routes[0].plugins[1].name: warning: plugin "key-auth" is not run by sidecall; in Envoy, use the ext_authz filter`,
	} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
	t.Setenv("SIDECALL_UNSUPPORTED_PLUGINS", "warn")
	if code := run([]string{"validate", "-c", file}, &out, &errb); code != 0 {
		t.Errorf("SIDECALL_UNSUPPORTED_PLUGINS=warn: exit %d", code)
	}
	for _, cmd := range [][]string{{"validate"}, {"serve"}, {"try", "--upstream", "http://127.0.0.1:1"}} {
		errb.Reset()
		args := append(append(cmd, "--unsupported-plugins", "ignore", "-c"), file)
		if code := run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--unsupported-plugins") {
			t.Errorf("%s --unsupported-plugins ignore: exit %d, stderr %q", cmd[0], code, errb.String())
		}
	}
}

// --offline: vault references are checked without reading a secret, so
// a file whose secrets live elsewhere validates; a reference to a vault the
// file does not declare still fails.
func TestValidateOffline(t *testing.T) {
	src := `_format_version: "3.0"
vaults:
  - name: env
    prefix: kcsvault
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: ["/"]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: auth
                  request:
                    url: "{vault://kcsvault/SIDECALL_TEST_NO_SUCH_URL}"
                    method: POST
                    body:
                      custom:
                        client_secret: "{vault://kcsvault/SIDECALL_TEST_NO_SUCH_SECRET}"
`
	file := writeKong(t, src)
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-c", file}, &out, &errb); code != 1 || strings.Contains(out.String(), "required field missing") {
		t.Errorf("online: exit %d, want 1 with only the unset variables:\n%s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"validate", "--offline", "-c", file}, &out, &errb); code != 0 {
		t.Errorf("offline: exit %d\n%s", code, out.String())
	}
	bad := writeKong(t, strings.Replace(src, "{vault://kcsvault/SIDECALL_TEST_NO_SUCH_URL}", "{vault://aws/orders/url}", 1))
	out.Reset()
	if code := run([]string{"validate", "--offline", "-c", bad}, &out, &errb); code != 1 || !strings.Contains(out.String(), `unsupported vault "aws"`) {
		t.Errorf("offline, undeclared vault: exit %d\n%s", code, out.String())
	}
}

// serve and try pass --unsupported-plugins to every load (the app's).
func TestAppUnsupportedPlugins(t *testing.T) {
	file := writeKong(t, "_format_version: \"3.0\"\nplugins:\n  - name: prometheus\n")
	if a, err := newApp(appOptions{config: file}); err == nil {
		a.close()
		t.Fatal("default: loaded an unsupported plugin")
	}
	a, err := newApp(appOptions{config: file, unsupported: "warn"})
	if err != nil {
		t.Fatalf("warn: %v", err)
	}
	defer a.close()
	if w := a.holder.Current().Warnings; len(w) != 1 || !strings.Contains(w[0], `plugin "prometheus" is not run by sidecall`) {
		t.Errorf("warnings %q", w)
	}
}

// A Konnect dump as decK writes it (metadata, defaults spelled out as
// null, top-level credentials, an upstream, plugins for Envoy) is refused
// only for the plugins sidecall lacks; with --unsupported-plugins warn it
// validates, every ignored part said once on stderr.
func TestValidateKonnectDump(t *testing.T) {
	const file = "../../flows/testdata/deck/konnect_dump.yaml"
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-c", file}, &out, &errb); code != 1 {
		t.Fatalf("exit %d\n%s", code, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || strings.Count(out.String(), "unknown plugin") != 3 {
		t.Errorf("want the three unsupported plugins only:\n%s", out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"validate", "--unsupported-plugins", "warn", "-c", file}, &out, &errb); code != 0 {
		t.Fatalf("warn: exit %d\n%s", code, out.String())
	}
	for _, want := range []string{":4: _info: warning:", ":8: _konnect: warning:", ":13: keyauth_credentials: warning:",
		":16: acls: warning:", `:30: services[0].host: warning: names upstream "orders-upstream"`,
		`:57: services[0].routes[0].plugins[0].name: warning: plugin "key-auth"`, `:156: plugins[0].name: warning: plugin "prometheus"`} {
		if strings.Count(errb.String(), want) != 1 {
			t.Errorf("stderr has %q %d times, want once:\n%s", want, strings.Count(errb.String(), want), errb.String())
		}
	}
}
