package kafka

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/sidecall/sidecall/flows"
)

// brokenPlugin is a plugin type whose config is always invalid.
func brokenPlugin(b *flows.Builder, _ *yaml.Node, at flows.Path) (flows.Plugin, error) {
	b.Errorf(at, "always invalid")
	return nil, nil
}

// loadFile loads a config with the Kafka plugins (and "broken") registered
// with their own Prometheus registry.
func loadFile(t *testing.T, res *flows.Resources, cfg string, noProvision bool) (*flows.Snapshot, error) {
	t.Helper()
	r := flows.NewRegistry()
	Register(r, prometheus.NewRegistry())
	r.Register("broken", 1, brokenPlugin)
	return flows.Load(t.TempDir()+"/kong.yml", []byte(cfg), flows.LoadOptions{Registry: r, Resources: res, NoProvision: noProvision})
}

// fileConfig is a config with route "up" running kafka-upstream (upExtra
// added to its config) and route "rr" running kafka-request-reply, both
// against addr, then the plugins of tail on a third route.
func fileConfig(addr, upExtra, tail string) string {
	h, p, _ := net.SplitHostPort(addr)
	cfg := fmt.Sprintf(`_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: up
        paths: ["/up"]
        plugins:
          - name: kafka-upstream
            config:
              bootstrap_servers: [{host: %[1]s, port: %[2]s}]
              topic: requests
              producer_async: false
              timeout: 2000
%[3]s
      - name: rr
        paths: ["/rr"]
        plugins:
          - name: kafka-request-reply
            config:
              bootstrap_servers: [{host: %[1]s, port: %[2]s}]
              topic: requests
              reply_topic: replies
`, h, p, indentLines(upExtra, 14))
	if tail != "" {
		cfg += "      - name: last\n        paths: [\"/last\"]\n        plugins:\n" + indentLines(tail, 10)
	}
	return cfg
}

func indentLines(s string, n int) string {
	if s == "" {
		return ""
	}
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pad)
}

// countingListener accepts TCP connections on 127.0.0.1 and counts them; it
// stands for a broker that must never be contacted.
func countingListener(t *testing.T) (addr string, accepted *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int32)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); wg.Wait() })
	return l.Addr().String(), accepted
}

// TestInvalidFileStartsNoClient: a file whose Kafka plugins are valid but
// whose last plugin is not fails to load without starting a producer or a
// reply consumer: nothing is held and the broker is never contacted. The
// same file with the last plugin disabled does contact it.
func TestInvalidFileStartsNoClient(t *testing.T) {
	addr, accepted := countingListener(t)
	res := newResources(t)
	_, err := loadFile(t, res, fileConfig(addr, "", "- name: broken\n"), false)
	if err == nil || !strings.Contains(err.Error(), "always invalid") {
		t.Fatalf("load: %v, want the broken plugin's problem", err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := res.Len(); n != 0 {
		t.Errorf("%d clients held after a failed load", n)
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("%d connections reached the broker from a failed load", n)
	}

	snap, err := loadFile(t, res, fileConfig(addr, "", "- name: broken\n  enabled: false\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	if n := res.Len(); n != 3 { // upstream producer, request-reply producer, reply consumer
		t.Errorf("%d clients held, want 3", n)
	}
	waitFor(t, func() bool { return accepted.Load() > 0 })
}

// TestValidateOnlyStartsNoClient: a load that only validates builds the
// plugins but no client; its plugins answer "unavailable" instead of
// panicking if asked.
func TestValidateOnlyStartsNoClient(t *testing.T) {
	addr, accepted := countingListener(t)
	res := newResources(t)
	snap, err := loadFile(t, res, fileConfig(addr, "", ""), true)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	time.Sleep(300 * time.Millisecond)
	if n := res.Len(); n != 0 {
		t.Errorf("%d clients held after a validate-only load", n)
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("%d connections reached the broker from a validate-only load", n)
	}
	rr := snap.RouteByName("rr").Pipeline.Instances[0].Plugin
	if st := httpStatus(t, access(t, rr, exchange("GET", "/rr", "", nil))); st != 503 {
		t.Errorf("request-reply without clients: status %d, want 503", st)
	}
	up := snap.RouteByName("up").Pipeline.Instances[0].Plugin
	x := exchange("POST", "/up", "", []byte("x"))
	if err := access(t, up, x); err != nil || x.Reply == nil || x.Reply.Status != 502 {
		t.Errorf("upstream without a producer: %v %+v, want 502", err, x.Reply)
	}
}

// TestReloadClosesReplacedProducer: a reload that changes kafka-upstream's
// connection timeout gets a new producer; the request-reply clients, whose
// settings did not change, are shared by both snapshots. Releasing the old
// snapshot closes only the producer it alone held.
func TestReloadClosesReplacedProducer(t *testing.T) {
	_, addr := newCluster(t)
	res := newResources(t)
	snapA, err := loadFile(t, res, fileConfig(addr, "", ""), false)
	if err != nil {
		t.Fatal(err)
	}
	upA := snapA.RouteByName("up").Pipeline.Instances[0].Plugin.(*upstream)
	rrA := snapA.RouteByName("rr").Pipeline.Instances[0].Plugin.(*requestReply)
	if n := res.Len(); n != 3 {
		t.Fatalf("%d clients after the first load, want 3", n)
	}
	waitReady(t, res)

	cfgB := strings.Replace(fileConfig(addr, "", ""), "timeout: 2000", "timeout: 3000", 1)
	snapB, err := loadFile(t, res, cfgB, false)
	if err != nil {
		t.Fatal(err)
	}
	defer snapB.Close()
	upB := snapB.RouteByName("up").Pipeline.Instances[0].Plugin.(*upstream)
	rrB := snapB.RouteByName("rr").Pipeline.Instances[0].Plugin.(*requestReply)
	if upB.prod == upA.prod {
		t.Fatal("a changed connection timeout must get a new producer")
	}
	if rrB.prod != rrA.prod || rrB.replies != rrA.replies {
		t.Fatal("unchanged request-reply settings must keep their producer and reply consumer")
	}
	if n := res.Len(); n != 4 {
		t.Fatalf("%d clients with both snapshots, want 4", n)
	}

	snapA.Close()
	if n := res.Len(); n != 3 {
		t.Errorf("%d clients after releasing the old snapshot, want 3", n)
	}
	if !producerClosed(upA.prod) {
		t.Error("the replaced producer is still open")
	}
	if producerClosed(upB.prod) || producerClosed(rrB.prod) {
		t.Error("a producer the new snapshot holds was closed")
	}
	waitReady(t, res)
	x := exchange("POST", "/up", "", []byte("after reload"))
	if err := access(t, upB, x); err != nil || x.Reply.Status != 200 {
		t.Fatalf("new snapshot: %v %+v", err, x.Reply)
	}

	snapB.Close()
	if n := res.Len(); n != 0 {
		t.Errorf("%d clients after releasing every snapshot, want 0", n)
	}
	res.Each(func(k string, _ io.Closer) { t.Errorf("still held: %s", k) })
}

func producerClosed(p *producer) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.closed
}

// gathered reads one counter or gauge sample from reg.
func gathered(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}

// TestTwoRegistriesCountApart: two Register calls in one process, each with
// its own Prometheus registry (two servers), both work and each counts only
// what its own plugins did.
func TestTwoRegistriesCountApart(t *testing.T) {
	_, addr := newCluster(t)
	cfg := rrConfig(addr, "")
	cfg = cfg[:len(cfg)-len("reply_topic: replies\n")] + "producer_async: false\n"
	type server struct {
		prom *prometheus.Registry
		p    flows.Plugin
	}
	var servers []server
	for range 2 {
		prom := prometheus.NewRegistry()
		r := flows.NewRegistry()
		Register(r, prom)
		res := newResources(t)
		b := flows.NewBuilder("test.yaml")
		b.Resources = res
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(cfg), &n); err != nil {
			t.Fatal(err)
		}
		pt, _ := r.Lookup("kafka-upstream")
		p, err := pt.New(b, &n, "plugins[0].config")
		if err != nil || b.Failed() {
			t.Fatalf("%v %v", err, b.Problems())
		}
		if err := p.(flows.Provisioner).Provision(b); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return ready(res) }) // kafka-upstream never gates k.Ready
		servers = append(servers, server{prom, p})
	}
	for i, s := range servers {
		for range i + 1 {
			x := exchange("POST", "/", "", []byte("x"))
			if err := access(t, s.p, x); err != nil || x.Reply.Status != 200 {
				t.Fatalf("server %d: %v %+v", i, err, x.Reply)
			}
		}
	}
	for i, s := range servers {
		if got := gathered(t, s.prom, "sidecall_kafka_produced_total", "topic", "requests", "result", "ok"); got != float64(i+1) {
			t.Errorf("server %d counted %v records, want %d", i, got, i+1)
		}
	}
}

// TestReadyWithoutClients: with no Kafka client held, Ready is true.
func TestReadyWithoutClients(t *testing.T) {
	k := Register(flows.NewRegistry(), prometheus.NewRegistry())
	if !k.Ready(flows.NewResources()) {
		t.Error("not ready with no Kafka clients")
	}
}
