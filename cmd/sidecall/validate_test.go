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
// section sidecall has no use for) is printed on stderr as FILE: warning:
// REASON with exit 0; --strict makes it exit 1.
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
	if want := file + `: warning: section "consumers" is ignored`; !strings.Contains(errb.String(), want) {
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
