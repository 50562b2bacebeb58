package plugins_test

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/testredis"
	"github.com/sidecall/sidecall/plugins"
	"github.com/sidecall/sidecall/processor"
)

// reloadConfig has one client of each kind sidecall shares across reloads:
// a Kafka producer and reply consumer, a Redis client, a memory cache and
// HTTP transports. i changes a setting of each, so every reload replaces
// every client.
func reloadConfig(broker string, redisPort, i int) string {
	host, port := splitHostPort(broker)
	return fmt.Sprintf(`_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: quotes
        paths: [/quotes]
        plugins:
          - name: kafka-request-reply
            config:
              bootstrap_servers: [{host: %s, port: %s}]
              topic: requests
              reply_topic: replies
              timeout: %d
      - name: events
        paths: [/events]
        plugins:
          - name: kafka-upstream
            config:
              bootstrap_servers: [{host: %s, port: %s}]
              topic: requests
              timeout: %d
      - name: mem
        paths: [/mem]
        plugins:
          - name: request-callout
            config:
              cache: {strategy: memory, cache_ttl: %d}
              callouts:
                - name: c
                  request: {url: "http://127.0.0.1:1/a"}
                  cache: {bypass: false}
      - name: red
        paths: [/red]
        plugins:
          - name: request-callout
            config:
              cache: {strategy: redis, cache_ttl: 60, redis: {host: 127.0.0.1, port: %d, timeout: %d}}
              callouts:
                - name: c
                  request: {url: "http://127.0.0.1:1/b"}
      - name: flow
        paths: [/flow]
        plugins:
          - name: flow-callout
            config: {shared_flow_service_name: flow}
  - name: flow
    url: https://127.0.0.1:1
    tls_verify: %t
`, host, port, 1000+i, host, port, 2000+i, 10+i, redisPort, 1000+i, i%2 == 0)
}

func splitHostPort(a string) (string, string) {
	for i := len(a) - 1; i >= 0; i-- {
		if a[i] == ':' {
			return a[:i], a[i+1:]
		}
	}
	return a, ""
}

func openFDs(t *testing.T) int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(es)
}

type usage struct {
	fds, goroutines int
	heap            uint64
}

// settle lets closed clients' goroutines end, then measures.
func settle(t *testing.T) usage {
	var u usage
	for i := 0; i < 20; i++ {
		runtime.GC()
		time.Sleep(50 * time.Millisecond)
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		u = usage{openFDs(t), runtime.NumGoroutine(), ms.HeapInuse}
	}
	return u
}

// TestReloadsReleaseReplacedClients: 200 reloads, each changing a setting
// of every shared client, leave open files, goroutines and heap where the
// first load left them: a replaced client is closed once the snapshot that
// used it is released.
func TestReloadsReleaseReplacedClients(t *testing.T) {
	if testing.Short() {
		t.Skip("200 reloads")
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "requests", "replies"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	broker := cluster.ListenAddrs()[0]
	redisPort, _ := testredis.Start(t)

	set := plugins.New(plugins.Options{Metrics: prometheus.NewRegistry()})
	defer set.Close()
	res := flows.NewResources()
	defer res.Close()
	holder := &processor.Holder{}
	load := func(i int) {
		t.Helper()
		s, err := flows.Load("kong.yml", []byte(reloadConfig(broker, redisPort, i)), flows.LoadOptions{Registry: set.Registry, Resources: res, Lua: set.Lua})
		if err != nil {
			t.Fatalf("load %d: %v", i, err)
		}
		holder.Swap(s) // no stream holds the old snapshot: it closes now
	}
	// A few loads first, so lazily started runtime goroutines and pools
	// are part of the baseline.
	for i := 0; i < 3; i++ {
		load(i)
	}
	clients := res.Len()
	if clients < 5 {
		t.Fatalf("%d shared clients after a load, want at least 5 (producers, consumer, redis, cache, transport)", clients)
	}
	waitReady(t, set, res)
	before := settle(t)
	const reloads = 200
	for i := 3; i < 3+reloads; i++ {
		load(i)
	}
	waitReady(t, set, res)
	after := settle(t)
	t.Logf("after 3 loads: %d fds, %d goroutines, %.1f MiB heap; after %d more reloads: %d fds, %d goroutines, %.1f MiB heap; %d shared clients",
		before.fds, before.goroutines, float64(before.heap)/(1<<20), reloads, after.fds, after.goroutines, float64(after.heap)/(1<<20), res.Len())
	if res.Len() != clients {
		t.Errorf("%d shared clients open after the reloads, want %d (one set)", res.Len(), clients)
	}
	if after.fds > before.fds+4 {
		t.Errorf("open files grew from %d to %d", before.fds, after.fds)
	}
	if after.goroutines > before.goroutines+10 {
		t.Errorf("goroutines grew from %d to %d", before.goroutines, after.goroutines)
	}
	if after.heap > before.heap+16<<20 {
		t.Errorf("heap grew from %.1f to %.1f MiB", float64(before.heap)/(1<<20), float64(after.heap)/(1<<20))
	}
	holder.Current().Close()
	if n := res.Len(); n != 0 {
		t.Errorf("%d clients open after the last snapshot closed", n)
	}
}

func waitReady(t *testing.T, set *plugins.Set, res *flows.Resources) {
	t.Helper()
	for i := 0; i < 200; i++ {
		all := true // kafka-upstream producers too: they never gate set.Ready
		for _, d := range set.Dependencies(res) {
			all = all && d.Ready
		}
		if all {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatal("kafka clients never became ready")
}
