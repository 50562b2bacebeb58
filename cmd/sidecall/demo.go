package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/sidecall/sidecall/flows/lua"
	"github.com/sidecall/sidecall/kafka"
	kafkav1 "github.com/sidecall/sidecall/proto/sidecall/kafka/v1"
)

//go:embed demo.yaml
var demoConfig string

// scenario is one curl command the demo prints (and its test runs).
type scenario struct {
	What    string
	Method  string
	Path    string
	Headers []string // name, value pairs
	Body    string
	Status  int    // what the demo answers
	Expect  string // a piece of the body
	Times   int    // > 1: run that many times in a row, each answering Status and Expect
	Result  string // set: then GET the answer's Location; once 200, its body has this
}

var demoScenarios = []scenario{
	{"pass-through (strip_path: /orders is removed, as Kong does), with correlation-id echoed", "GET", "/orders/42", nil, "", 200, `"path":"/42"`, 0, ""},
	{"request-callout enriches the upstream request", "GET", "/profile/7", nil, "", 200, `"X-User-Name":["User 7"]`, 0, ""},
	{"request-callout aggregation answered by sidecall", "GET", "/dashboard", nil, "", 200, `"orders":3`, 0, ""},
	{"flow-callout: the security flow allows", "GET", "/secure", nil, "", 200, `"X-Security-User":["alice"]`, 0, ""},
	{"flow-callout: the security flow denies", "GET", "/secure", []string{"X-Deny", "1"}, "", 403, "Access denied by security flow.", 0, ""},
	{What: "circuit breaker: the recommendations service fails 3 times in a row (503, continued: X-Sidecall-Completed: false), which opens it",
		Method: "GET", Path: "/recommendations", Status: 200, Expect: `"service":"answered 503`, Times: 3},
	{What: "circuit breaker open for 30 s: the callout fails at once, the service is not called", Method: "GET", Path: "/recommendations",
		Status: 200, Expect: `"service":"not called: circuit open"`},
	{"Kafka request-reply through an embedded broker", "POST", "/quote", []string{"Content-Type", "application/json"}, `{"symbol":"ACME"}`, 200, `"symbol":"ACME"`, 0, ""},
	{What: "Kafka request-reply, async: 202 + Location at once, then GET the Location: 200 with the reply", Method: "POST", Path: "/report",
		Headers: []string{"Content-Type", "application/json"}, Body: `{"symbol":"ACME"}`, Status: 202, Expect: `"status":"pending"`, Result: `"symbol":"ACME"`},
	{"pre-function Lua answers", "GET", "/hello?name=sidecall", nil, "", 200, `"hello":"sidecall"`, 0, ""},
}

func (s scenario) curl(base string) string {
	var b strings.Builder
	b.WriteString("curl -i")
	if s.Method != "GET" {
		b.WriteString(" -X " + s.Method)
	}
	for i := 0; i+1 < len(s.Headers); i += 2 {
		fmt.Fprintf(&b, " -H '%s: %s'", s.Headers[i], s.Headers[i+1])
	}
	if s.Body != "" {
		fmt.Fprintf(&b, " -d '%s'", s.Body)
	}
	fmt.Fprintf(&b, " '%s%s'", base, s.Path)
	switch {
	case s.Times > 1:
		return fmt.Sprintf("for i in $(seq %d); do %s; echo; done", s.Times, b.String())
	case s.Result != "":
		// tee shows the 202; sed keeps its Location for the GET.
		return fmt.Sprintf("loc=$(%s | tee /dev/stderr | tr -d '\\r' | sed -n 's/^[Ll]ocation: //p')\ncurl -i \"%s$loc\"",
			strings.Replace(b.String(), "curl -i", "curl -si", 1), base)
	}
	return b.String()
}

func serveBackend(h http.Handler) (string, func(), error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	s := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.Serve(l) }()
	return l.Addr().String(), func() { _ = s.Close() }, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("content-type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// demoBackends are the orders upstream (echoes what it received), the users
// API that callouts call, the security flow service, and a recommendations
// service that always fails (for the circuit breaker).
func demoBackends() (orders, users, flow, flaky string, stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, s := range stops {
			s()
		}
	}
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		writeJSON(w, 200, map[string]any{"service": "orders", "method": r.Method, "path": r.URL.Path,
			"query": r.URL.RawQuery, "headers": r.Header, "body": string(b)})
	})
	usersMux := http.NewServeMux()
	usersMux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"id": r.PathValue("id"), "name": "User " + r.PathValue("id"), "tier": "gold"})
	})
	usersMux.HandleFunc("GET /orders", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"user": r.URL.Query().Get("user"), "count": 3})
	})
	flowH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Deny") != "" {
			writeJSON(w, 403, map[string]any{"allowed": false})
			return
		}
		writeJSON(w, 200, map[string]any{"allowed": true, "user": "alice"})
	})
	var calls atomic.Int64
	flakyH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 503, map[string]any{"error": "overloaded", "call": calls.Add(1)})
	})
	for _, p := range []struct {
		h   http.Handler
		out *string
	}{{echo, &orders}, {usersMux, &users}, {flowH, &flow}, {flakyH, &flaky}} {
		addr, s, e := serveBackend(p.h)
		if e != nil {
			stop()
			return "", "", "", "", nil, e
		}
		*p.out = addr
		stops = append(stops, s)
	}
	return orders, users, flow, flaky, stop, nil
}

func quoteHandler(_ context.Context, req *kafkav1.Request) *kafkav1.Reply {
	var in struct {
		Symbol string `json:"symbol"`
	}
	_ = json.Unmarshal(kafka.RequestBodyOf(req), &in)
	body, _ := json.Marshal(map[string]any{"symbol": in.Symbol, "price": 42.5, "correlation_id": req.GetCorrelationId()})
	return &kafkav1.Reply{Status: 200, BodyText: string(body),
		Headers: []*kafkav1.Header{{Name: "content-type", Value: "application/json"}, {Name: "x-responder", Value: "demo"}}}
}

type demoOptions struct {
	listen, adminListen string
	log                 *zap.Logger
	luaTimeout          time.Duration
	maxBody             int                      // --max-body-size
	hideConfig          bool                     // --admin-config=false
	envoy               envoyTimeouts            // --envoy-message-timeout, --envoy-max-message-timeout
	ready               func(base, admin string) // called once everything answers
	tracer              trace.TracerProvider     // nil: tracing off
}

// runDemo runs the demo until ctx ends.
func runDemo(ctx context.Context, o demoOptions, stdout io.Writer) error {
	orders, users, flow, flaky, stopBackends, err := demoBackends()
	if err != nil {
		return err
	}
	defer stopBackends()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "quotes.requests", "quotes.replies"))
	if err != nil {
		return fmt.Errorf("starting the embedded Kafka broker: %w", err)
	}
	defer cluster.Close()
	broker := cluster.ListenAddrs()[0]
	kh, kp, _ := net.SplitHostPort(broker)
	rctx, cancelResponder := context.WithCancel(ctx)
	defer cancelResponder()
	responderReady := make(chan struct{})
	responder := &kafka.Responder{Brokers: []string{broker}, Topic: "quotes.requests", Handler: quoteHandler, Log: o.log, TracerProvider: o.tracer}
	respDone := make(chan error, 1)
	go func() { respDone <- responder.Run(rctx, func() { close(responderReady) }) }()

	cfg := strings.NewReplacer("{{ORDERS}}", orders, "{{USERS}}", users, "{{FLOW}}", flow, "{{FLAKY}}", flaky,
		"{{KAFKA_HOST}}", kh, "{{KAFKA_PORT}}", kp).Replace(demoConfig)
	a, err := newApp(appOptions{config: "demo.yaml", data: []byte(cfg), log: o.log, luaTimeout: o.luaTimeout, maxBody: o.maxBody, hideConfig: o.hideConfig,
		selfAddrs: []string{o.listen, o.adminListen}, envoy: o.envoy, tracer: o.tracer})
	if err != nil {
		return err
	}
	l, err := startLocal(a, "http://"+orders, o.listen)
	if err != nil {
		a.close()
		return err
	}
	defer l.close()
	adminURL := ""
	if o.adminListen != "" {
		if al, err := net.Listen("tcp", o.adminListen); err == nil {
			adminURL = "http://" + al.Addr().String()
			admin := &http.Server{Handler: a.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
			go func() { _ = admin.Serve(al) }()
			defer admin.Close()
		} else {
			o.log.Warn("admin API not started", zap.Error(err))
		}
	}
	// Ready when the responder and sidecall's reply consumer are positioned.
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	select {
	case <-responderReady:
	case err := <-respDone:
		return fmt.Errorf("kafka responder: %w", err)
	case <-deadline.C:
		return errors.New("the embedded Kafka responder did not start")
	case <-ctx.Done():
		return nil
	}
	for !a.isReady() {
		select {
		case <-deadline.C:
			return errors.New("sidecall did not become ready")
		case <-ctx.Done():
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
	base := l.URL()
	fmt.Fprintf(stdout, "sidecall demo is running: Envoy stand-in on %s, admin on %s\n", base, adminURL)
	fmt.Fprintf(stdout, "Config: cmd/sidecall/demo.yaml. Try:\n\n")
	for _, s := range demoScenarios {
		fmt.Fprintf(stdout, "# %s (expect %d)\n%s\n\n", s.What, s.Status, s.curl(base))
	}
	fmt.Fprintf(stdout, "Metrics: curl -s %s/metrics | grep ^sidecall_\nCtrl-C stops the demo.\n", adminURL)
	if o.ready != nil {
		o.ready(base, adminURL)
	}
	<-ctx.Done()
	return nil
}

func cmdDemo(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("demo", stderr)
	listen := fs.String("listen", "127.0.0.1:8000", "HTTP address of the Envoy stand-in")
	admin := fs.String("admin-listen", "127.0.0.1:9901", "admin HTTP address")
	logLevel := fs.String("log-level", "warn", "debug, info, warn, error")
	luaTimeout := fs.Duration("lua-timeout", lua.DefaultTimeout, luaTimeoutUsage)
	maxBody := fs.Int("max-body-size", defaultMaxBodySize, maxBodySizeUsage)
	adminConfig := fs.Bool("admin-config", true, adminConfigUsage)
	var et envoyTimeouts
	et.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return flagsExit(err, stdout)
	}
	if flag, err := et.check(); err != nil {
		fmt.Fprintf(stderr, "sidecall demo: %s: %v\n", flag, err)
		return 2
	}
	if err := checkLuaTimeout(*luaTimeout); err != nil {
		fmt.Fprintln(stderr, "sidecall demo: --lua-timeout:", err)
		return 2
	}
	if err := checkMaxBodySize(*maxBody); err != nil {
		fmt.Fprintln(stderr, "sidecall demo: --max-body-size:", err)
		return 2
	}
	log, err := newLogger(*logLevel, "console", stderr)
	if err != nil {
		fmt.Fprintln(stderr, "sidecall demo:", err)
		return 2
	}
	tp, err := startTracing(log)
	if err != nil {
		fmt.Fprintln(stderr, "sidecall demo: tracing:", err)
		return 2
	}
	if tp != nil {
		defer stopTracing(tp, log)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := runDemo(ctx, demoOptions{listen: *listen, adminListen: *admin, log: log, luaTimeout: *luaTimeout, maxBody: *maxBody, hideConfig: !*adminConfig, envoy: et,
		tracer: tracerOrNil(tp)}, stdout); err != nil {
		fmt.Fprintln(stderr, "sidecall demo:", err)
		return 1
	}
	return 0
}
