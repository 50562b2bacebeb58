// Package envoytest is sidecall's end-to-end harness: a real sidecall
// processor on a 127.0.0.1 gRPC port, the envoy stand-in in front of a
// real upstream HTTP server, all started and stopped by a test.
//
// With SIDECALL_E2E_ENVOY set to an Envoy binary, each harness also starts
// that Envoy with envoy/sidecar.yaml (rewritten for the harness's ports and
// its stand-in settings) and sends the test's requests through it instead
// (see envoy/run-against-envoy.sh).
package envoytest

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sidecall/sidecall/envoy"
	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/flows/lua"
	"github.com/sidecall/sidecall/plugins"
	"github.com/sidecall/sidecall/processor"
)

// Options tweak a harness.
type Options struct {
	// Upstream is the upstream base URL; empty starts an Echo server.
	Upstream string
	// Registry defaults to every plugin (plugins.New), with their metrics
	// in the harness's registry.
	Registry *flows.Registry
	// Lua sets the Lua limits (time limit, caps); zero values are defaults.
	Lua lua.Options
	// Envoy, if set, edits the stand-in's config before it starts.
	Envoy func(*envoy.Config)
	// Dir is where the config file is written (for relative vault refs).
	Dir string
	Log *zap.Logger
	// TracerProvider traces the processor's streams (nil: tracing off).
	TracerProvider trace.TracerProvider
}

// Harness is a running sidecall with Envoy in front.
type Harness struct {
	URL       string // the stand-in's HTTP front, or the real Envoy's listener
	Proxy     *envoy.Proxy
	Holder    *processor.Holder
	Server    *processor.Server
	Resources *flows.Resources
	Metrics   *prometheus.Registry
	Lua       *flows.LuaRuntime
	Plugins   *plugins.Set
	Upstream  string
	GRPCAddr  string
	registry  *flows.Registry
	dir       string

	// RealEnvoy is set when requests go through a real Envoy
	// (SIDECALL_E2E_ENVOY); Proxy then sees none of them.
	RealEnvoy bool
}

// ShippedEnvoy is the stand-in configured like envoy/sidecar.yaml.
func ShippedEnvoy(c *envoy.Config) { envoy.SidecallDefaults(c) }

// Start starts a harness serving cfg (decK YAML).
func Start(t testing.TB, cfg string, o Options) *Harness {
	t.Helper()
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Upstream == "" {
		up := httptest.NewServer(Echo())
		t.Cleanup(up.Close)
		o.Upstream = up.URL
	}
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	h := &Harness{Holder: &processor.Holder{}, Resources: flows.NewResources(), Metrics: prometheus.NewRegistry(),
		Upstream: o.Upstream, registry: o.Registry, dir: o.Dir}
	h.Plugins = plugins.New(plugins.Options{Metrics: h.Metrics, Version: "test", Lua: o.Lua})
	h.Lua = h.Plugins.Lua
	if h.registry == nil {
		h.registry = h.Plugins.Registry
	}
	snap, err := h.load(cfg)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	h.Holder.Swap(snap)
	h.Server = processor.New(processor.Options{Holder: h.Holder, Log: o.Log, Metrics: processor.NewMetrics(h.Metrics), TracerProvider: o.TracerProvider})
	g := h.Server.GRPCServer()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.GRPCAddr = lis.Addr().String()
	go func() { _ = g.Serve(lis) }()
	conn, err := grpc.NewClient(h.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ec := envoy.Config{Upstream: o.Upstream, Conn: conn}
	ShippedEnvoy(&ec)
	if o.Envoy != nil {
		o.Envoy(&ec)
	}
	p, err := envoy.New(ec)
	if err != nil {
		t.Fatal(err)
	}
	h.Proxy = p
	front := httptest.NewServer(p)
	h.URL = front.URL
	t.Cleanup(func() {
		front.Close()
		p.Close()
		conn.Close()
		g.Stop()
		if s := h.Holder.Current(); s != nil {
			s.Close()
		}
		h.Resources.Close()
		h.Plugins.Close()
	})
	if bin := os.Getenv(EnvoyEnv); bin != "" {
		// After the cleanup above: a skipped or failed start releases all.
		h.URL = startRealEnvoy(t, bin, ec, h.GRPCAddr, o.Upstream)
		h.RealEnvoy = true
	}
	return h
}

func (h *Harness) load(cfg string) (*flows.Snapshot, error) {
	return flows.Load(h.dir+"/kong.yml", []byte(cfg), flows.LoadOptions{Registry: h.registry, Resources: h.Resources, Lua: h.Lua})
}

// Reload swaps in a new config; a bad one returns its error and keeps the
// old one serving.
func (h *Harness) Reload(cfg string) error {
	snap, err := h.load(cfg)
	if err != nil {
		return err
	}
	h.Holder.Swap(snap)
	return nil
}

// Do sends req through Envoy (a real HTTP request to the stand-in).
func (h *Harness) Do(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// Request builds a request to the stand-in.
func (h *Harness) Request(t testing.TB, method, path, body string, headers ...string) *http.Request {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	return req
}

// Get is Do for a GET without body.
func (h *Harness) Get(t testing.TB, path string, headers ...string) (*http.Response, []byte) {
	return h.Do(t, h.Request(t, "GET", path, "", headers...))
}

// Echoed is what the Echo upstream answers: the request it received.
type Echoed struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Query   string              `json:"query"`
	Host    string              `json:"host"`
	Headers map[string][]string `json:"headers"`
	Body    string              `json:"body"`
}

// Header returns the first value of a received header (case-insensitive).
func (e Echoed) Header(name string) string {
	for k, v := range e.Headers {
		if strings.EqualFold(k, name) && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// Echo is an upstream that answers with the request it received as JSON.
func Echo() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("content-type", "application/json")
		w.Header().Set("x-upstream", "echo")
		_ = json.NewEncoder(w).Encode(Echoed{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
			Host: r.Host, Headers: r.Header, Body: string(b)})
	})
}

// DecodeEcho decodes an Echo answer.
func DecodeEcho(t testing.TB, body []byte) Echoed {
	t.Helper()
	var e Echoed
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("not an echo answer: %v: %s", err, body)
	}
	return e
}

// DoTraced is Do that also returns the request's ext_proc stream trace
// (recorded by the stand-in just after the response is written).
func (h *Harness) DoTraced(t testing.TB, req *http.Request) (*http.Response, []byte, *envoy.StreamTrace) {
	t.Helper()
	if h.RealEnvoy {
		t.Skipf("%s: stream traces come from the stand-in; a real Envoy does not record them", EnvoyEnv)
	}
	seen := map[*envoy.StreamTrace]bool{}
	for _, tr := range h.Proxy.Traces() {
		seen[tr] = true
	}
	resp, body := h.Do(t, req)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		for _, tr := range h.Proxy.Traces() {
			if !seen[tr] {
				return resp, body, tr
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("no stream trace for %s %s", req.Method, req.URL)
	return nil, nil, nil
}
