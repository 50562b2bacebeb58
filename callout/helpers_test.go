package callout

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/flows/lua"
	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

type env map[string]string

// testFactory is the factory of the tests' registry (metrics kept
// unregistered).
var testFactory = newFactory(Options{Version: "test"})

// buildWith compiles a request-callout config (YAML or JSON) and provisions
// it like the loader, with its clients in res.
func buildWith(t testing.TB, res *flows.Resources, e env, src string) (*Plugin, []flows.FieldError) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatalf("bad test yaml: %v", err)
	}
	rt := flows.NewLuaRuntime(lua.Options{})
	t.Cleanup(rt.Sandbox.Close)
	b := flows.NewBuilder("test.yaml")
	b.Resources = res
	b.Runtime = rt
	b.Scope = flows.Scope{Route: "r1", PluginID: "p1"}
	b.LookupEnv = func(k string) (string, bool) { v, ok := e[k]; return v, ok }
	p, err := compile(b, n.Content[0], "plugins[0].config", testFactory)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Failed() {
		if err := p.Provision(b); err != nil {
			t.Fatalf("provision: %v", err)
		}
		t.Cleanup(p.closeExtra)
	}
	return p, b.Problems()
}

func build(t testing.TB, src string) *Plugin {
	t.Helper()
	res := flows.NewResources()
	t.Cleanup(func() { _ = res.Close() })
	p, probs := buildWith(t, res, nil, src)
	if len(probs) > 0 {
		t.Fatalf("unexpected config problems: %v", probs)
	}
	return p
}

func newX(method, path, query string, h map[string]string, body string) *flows.Exchange {
	hs := flows.Headers{}
	for k, v := range h {
		hs.Set(k, v)
	}
	return flows.NewExchange("req-1", flows.Request{Method: method, Path: path, RawQuery: query, Headers: hs,
		Body: []byte(body), HasBody: body != ""}, nil)
}

// recorder is a test backend recording each request.
type recorder struct {
	mu    sync.Mutex
	reqs  []recorded
	calls atomic.Int32
}

type recorded struct {
	Method, Path, Query string
	Header              http.Header
	Body                string
}

func (r *recorder) record(req *http.Request) {
	b := new(strings.Builder)
	_, _ = fmt.Fprint(b, readAll(req))
	r.mu.Lock()
	r.reqs = append(r.reqs, recorded{req.Method, req.URL.Path, req.URL.RawQuery, req.Header.Clone(), b.String()})
	r.mu.Unlock()
	r.calls.Add(1)
}

func (r *recorder) last(t *testing.T) recorded {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		t.Fatal("backend saw no request")
	}
	return r.reqs[len(r.reqs)-1]
}

func readAll(r *http.Request) string {
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			return sb.String()
		}
	}
}

// jsonServer answers every request with status and the JSON of v.
func jsonServer(t *testing.T, rec *recorder, status int, v any) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rec != nil {
			rec.record(r)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}))
	t.Cleanup(s.Close)
	return s
}

func httpErr(t *testing.T, err error) *flows.HTTPError {
	t.Helper()
	if err == nil {
		t.Fatal("want an error, got nil")
	}
	he, ok := err.(*flows.HTTPError)
	if !ok {
		t.Fatalf("want *flows.HTTPError, got %T %v", err, err)
	}
	return he
}

func ctxEntry(t *testing.T, x *flows.Exchange, name string) map[string]any {
	t.Helper()
	m, ok := x.Shared["callouts"].(map[string]any)[name].(map[string]any)
	if !ok {
		t.Fatalf("no callout context for %q", name)
	}
	return m
}

type (
	responseWriter  = http.ResponseWriter
	request         = http.Request
	httpHandlerFunc = http.HandlerFunc
)
