package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const slowRoute = `_format_version: "3.0"
services:
  - name: s
    url: http://127.0.0.1:1
    routes:
      - name: slow
        paths: [/slow]
        plugins:
          - name: request-callout
            config:
              callouts:
                - name: a
                  request: {url: "http://127.0.0.1:2/x"}
`

// validate warns on stderr about a route whose budget (request-callout's
// default 10s timeout) plus the override margin is over
// --envoy-max-message-timeout, and stays silent once the flag covers it.
func TestValidateWarnsAboutBudgetOverMaxMessageTimeout(t *testing.T) {
	f := filepath.Join(t.TempDir(), "slow.yml")
	if err := os.WriteFile(f, []byte(slowRoute), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-c", f}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s%s", code, out.String(), errb.String())
	}
	if w := errb.String(); !strings.Contains(w, "warning") || !strings.Contains(w, "route slow") ||
		!strings.Contains(w, "10s") || !strings.Contains(w, "--envoy-max-message-timeout") {
		t.Errorf("stderr %q, want a budget warning for route slow", w)
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"validate", "--envoy-max-message-timeout", "11s", "-c", f}, &out, &errb); code != 0 || errb.Len() != 0 {
		t.Errorf("exit %d, stderr %q; want no warning with an 11s max", code, errb.String())
	}
	// The shipped examples fit the defaults.
	examples, _ := filepath.Glob("../../examples/*.yaml")
	for _, e := range examples {
		errb.Reset()
		if code := run([]string{"validate", "-c", e}, &out, &errb); code != 0 || strings.Contains(errb.String(), "envoy-max-message-timeout") {
			t.Errorf("%s: exit %d, stderr %q", e, code, errb.String())
		}
	}
}

func TestEnvoyTimeoutFlagsChecked(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "-c", "x.yml", "--envoy-message-timeout", "0s"},
		{"serve", "-c", "x.yml", "--envoy-max-message-timeout", "2h"},
		{"try", "-c", "x.yml", "--upstream", "http://127.0.0.1:1", "--envoy-max-message-timeout", "0s"},
		{"validate", "-c", "x.yml", "--envoy-message-timeout", "-1s"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--envoy-") {
			t.Errorf("%v: exit %d, stderr %q; want 2 and the flag named", args, code, errb.String())
		}
	}
}
