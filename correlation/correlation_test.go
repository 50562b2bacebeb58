package correlation

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sidecall/sidecall/flows"
)

var update = flag.Bool("update", false, "rewrite golden files")

func registry() *flows.Registry {
	r := flows.NewRegistry()
	Register(r)
	return r
}

func TestBadConfigsGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) == 0 {
		t.Fatal("no bad configs")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := flows.LoadFile(f, flows.LoadOptions{Registry: registry()})
			var ce *flows.ConfigError
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

func load(t *testing.T, cfg string) *flows.Snapshot {
	t.Helper()
	s, err := flows.Load("kong.yml", []byte("plugins:\n  - name: correlation-id\n    config: "+cfg+"\n"), flows.LoadOptions{Registry: registry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestKeepsTheClientsIDAndEchoesIt(t *testing.T) {
	s := load(t, "{header_name: X-Correlation-ID, generator: uuid, echo_downstream: true}")
	if !s.Global.Needs().ResponseHeaders {
		t.Fatal("echo_downstream needs the response headers")
	}
	ctx := context.Background()
	x := flows.NewExchange("id", flows.Request{Headers: flows.Headers{"x-correlation-id": {"abc"}}}, nil)
	if err := s.Global.Serve(ctx, flows.PhaseAccess, x, nil); err != nil {
		t.Fatal(err)
	}
	if len(x.Changes().RequestHeaders) != 0 || x.Shared[SharedKey] != "abc" {
		t.Fatalf("changes %v, shared %v: want the client's id kept", x.Changes(), x.Shared)
	}
	x.Response = flows.Response{Status: 200, Headers: flows.Headers{}}
	if err := s.Global.Serve(ctx, flows.PhaseHeaderFilter, x, nil); err != nil {
		t.Fatal(err)
	}
	if got := x.Response.Headers.Get("x-correlation-id"); got != "abc" {
		t.Fatalf("echoed %q, want abc", got)
	}
}

func TestCounterGeneratorCountsFromOne(t *testing.T) {
	s := load(t, "{}")
	if s.Global.Needs().ResponseHeaders {
		t.Error("without echo_downstream no response headers are needed")
	}
	var ids []string
	for i := 0; i < 2; i++ {
		x := flows.NewExchange("id", flows.Request{}, nil)
		if err := s.Global.Serve(context.Background(), flows.PhaseAccess, x, nil); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, x.Request.Headers.Get("kong-request-id"))
	}
	if !strings.HasSuffix(ids[0], "#1") || !strings.HasSuffix(ids[1], "#2") || ids[0][:36] != ids[1][:36] {
		t.Fatalf("ids %q: want one uuid then #1, #2", ids)
	}
}

// One id per request: after correlation-id runs, an error body's
// request_id is its value, not Envoy's x-request-id, and the log lines
// name both.
func TestErrorBodiesNameTheCorrelationID(t *testing.T) {
	s := load(t, "{header_name: X-Correlation-ID, generator: uuid}")
	core, logs := observer.New(zap.InfoLevel)
	x := flows.NewExchange("envoy-id", flows.Request{Headers: flows.Headers{}}, zap.New(core))
	if err := s.Global.Serve(context.Background(), flows.PhaseAccess, x, nil); err != nil {
		t.Fatal(err)
	}
	id, _ := x.Shared[SharedKey].(string)
	if id == "" || x.ID != id {
		t.Fatalf("x.ID %q, correlation id %q", x.ID, id)
	}
	var body struct {
		RequestID string `json:"request_id"`
	}
	rep := flows.ErrorReply(x, errors.New("boom"))
	if err := json.Unmarshal(rep.Body, &body); err != nil || body.RequestID != id {
		t.Errorf("error body %s, want request_id %q", rep.Body, id)
	}
	x.Log.Info("plugin line")
	if e := logs.FilterMessage("plugin line").All(); len(e) != 1 || e[0].ContextMap()["correlation_id"] != id {
		t.Errorf("plugin log lines %v, want correlation_id %q", e, id)
	}
}
