package kafka

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/netport"
	kafkav1 "github.com/sidecall/sidecall/proto/sidecall/kafka/v1"
)

func TestMain(m *testing.M) {
	// sarama's go-metrics starts one process-wide meter ticker that never stops.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"))
}

// newCluster starts an in-process Kafka-protocol broker on 127.0.0.1 with
// the request and reply topics (3 partitions each).
func newCluster(t *testing.T, opts ...kfake.Opt) (*kfake.Cluster, string) {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(3, "requests", "replies")}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()[0]
}

func hostPort(t *testing.T, addr string) (string, string) {
	i := strings.LastIndexByte(addr, ':')
	return addr[:i], addr[i+1:]
}

// build compiles one plugin from YAML and provisions it (its clients are
// taken from res); it fails the test on config errors. Each call registers
// the plugins afresh, with collectors of their own.
func build(t *testing.T, res *flows.Resources, name, cfg string) flows.Plugin {
	t.Helper()
	p, b := tryBuild(t, res, name, cfg)
	if b.Failed() {
		t.Fatalf("config problems: %v", b.Problems())
	}
	if pv, ok := p.(flows.Provisioner); ok {
		if err := pv.Provision(b); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// tryBuild runs the factory only: it decodes and validates, and starts no
// client.
func tryBuild(t *testing.T, res *flows.Resources, name, cfg string) (flows.Plugin, *flows.Builder) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(cfg), &n); err != nil {
		t.Fatal(err)
	}
	reg := flows.NewRegistry()
	Register(reg, prometheus.NewRegistry())
	pt, ok := reg.Lookup(name)
	if !ok {
		t.Fatalf("%s not registered", name)
	}
	b := flows.NewBuilder("test.yaml")
	b.Resources = res
	p, err := pt.New(b, &n, "plugins[0].config")
	if err != nil {
		t.Fatal(err)
	}
	return p, b
}

func newResources(t *testing.T) *flows.Resources {
	res := flows.NewResources()
	t.Cleanup(func() { _ = res.Close() })
	return res
}

func waitReady(t *testing.T, res *flows.Resources) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if ready(res) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("kafka resources not ready after 5s")
}

func rrConfig(addr, extra string) string {
	h, p := addr[:strings.LastIndexByte(addr, ':')], addr[strings.LastIndexByte(addr, ':')+1:]
	return fmt.Sprintf("bootstrap_servers: [{host: %s, port: %s}]\ntopic: requests\nreply_topic: replies\n%s", h, p, extra)
}

// startResponder runs a Responder until the test ends.
func startResponder(t *testing.T, addr string, f Format, h Handler) {
	t.Helper()
	startResponderConn(t, addr, f, h, nil)
}

// startResponderConn is startResponder with broker connection settings
// (SASL, TLS); c nil is a plain connection.
func startResponderConn(t *testing.T, addr string, f Format, h Handler, c *conn) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	r := &Responder{Brokers: []string{addr}, Topic: "requests", Format: f, Handler: h, conn: c}
	go func() { done <- r.Run(ctx, func() { close(ready) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("responder: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("responder: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("responder not ready")
	}
}

// echo answers 201 with the request's method, path and body.
func echo(_ context.Context, req *kafkav1.Request) *kafkav1.Reply {
	return &kafkav1.Reply{
		Status:  201,
		Headers: []*kafkav1.Header{{Name: "x-echo-path", Value: req.GetPath() + "?" + req.GetQuery()}, {Name: "x-method", Value: req.GetMethod()}},
		Body:    RequestBodyOf(req),
	}
}

func exchange(method, path, query string, body []byte, hs ...string) *flows.Exchange {
	h := flows.Headers{}
	for i := 0; i+1 < len(hs); i += 2 {
		h.Add(hs[i], hs[i+1])
	}
	return flows.NewExchange("rid", flows.Request{Method: method, Path: path, RawQuery: query, Headers: h, Body: body, HasBody: body != nil}, nil)
}

func access(t *testing.T, p flows.Plugin, x *flows.Exchange) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return p.(flows.AccessPlugin).Access(ctx, x)
}

func freePort(t *testing.T) int { return netport.Stable(t) }

// FreePort is freePort for the kafka_test package.
var FreePort = freePort

func kfakePorts(p int) []kfake.Opt { return []kfake.Opt{kfake.Ports(p)} }
