package plugins_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/netport"
	"github.com/sidecall/sidecall/internal/testredis"
	"github.com/sidecall/sidecall/plugins"
)

func readyConfig(kafkaPort, redisPort int, requestReply bool) string {
	rr := ""
	if requestReply {
		rr = fmt.Sprintf(`
      - name: quotes
        paths: [/quotes]
        plugins:
          - name: kafka-request-reply
            config:
              bootstrap_servers: [{host: 127.0.0.1, port: %d}]
              topic: requests
              reply_topic: replies`, kafkaPort)
	}
	return fmt.Sprintf(`_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:%s
      - name: events
        paths: [/events]
        plugins:
          - name: kafka-upstream
            config:
              bootstrap_servers: [{host: 127.0.0.1, port: %d}]
              topic: events
      - name: cached
        paths: [/cached]
        plugins:
          - name: request-callout
            config:
              cache: {strategy: redis, cache_ttl: 60, redis: {host: 127.0.0.1, port: %d}}
              callouts:
                - name: c
                  request: {url: "http://127.0.0.1:1/a"}
`, rr, kafkaPort, redisPort)
}

func depsString(deps []plugins.Dependency) string {
	var b strings.Builder
	for _, d := range deps {
		fmt.Fprintf(&b, "%s %s gates=%t ready=%t; ", d.Kind, d.Name, d.Gates, d.Ready)
	}
	return b.String()
}

// TestReadinessGatesOnlyOnHeldRequestReplyClients: with no broker, the
// clients of kafka-request-reply make the set unready while a snapshot holds
// them; a kafka-upstream producer and a Redis cache are listed (not gating)
// but never do. Once a reload drops the request-reply route and the old
// snapshot is closed, its clients are gone from the list and the set is
// ready. sidecall_dependency_up counts each dependency.
func TestReadinessGatesOnlyOnHeldRequestReplyClients(t *testing.T) {
	kafkaPort, redisPort := netport.Stable(t), netport.Stable(t) // nothing listens there
	reg := prometheus.NewRegistry()
	set := plugins.New(plugins.Options{Metrics: reg})
	defer set.Close()
	res := flows.NewResources()
	defer res.Close()
	reg.MustRegister(set.DependencyMetrics(res))
	load := func(src string) *flows.Snapshot {
		t.Helper()
		s, err := flows.Load("kong.yml", []byte(src), flows.LoadOptions{Registry: set.Registry, Resources: res, Lua: set.Lua})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	a := load(readyConfig(kafkaPort, redisPort, true))
	deps := set.Dependencies(res)
	want := map[string]int{"kafka-producer gates=true": 1, "kafka-producer gates=false": 1, "kafka-reply-consumer gates=true": 1, "redis gates=false": 1}
	got := map[string]int{}
	for _, d := range deps {
		got[fmt.Sprintf("%s gates=%t", d.Kind, d.Gates)]++
		if d.Ready {
			t.Errorf("%s %s ready with nothing listening", d.Kind, d.Name)
		}
		if strings.Contains(d.Name, "@") || d.Since.IsZero() {
			t.Errorf("name %q / since %v", d.Name, d.Since)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("dependencies: %s; want %v", depsString(deps), want)
	}
	if set.Ready(res) {
		t.Fatal("ready while kafka-request-reply's clients cannot reach a broker")
	}
	if n := testutil.CollectAndCount(set.DependencyMetrics(res), "sidecall_dependency_up"); n != 3 {
		t.Errorf("sidecall_dependency_up: %d series, want 3 (one producer series per broker list, the reply consumer, redis)", n)
	}
	redisSeries := fmt.Sprintf(`
# HELP sidecall_dependency_up 1 if a long-lived client (Kafka producer or reply consumer, Redis cache) is ready, else 0.
# TYPE sidecall_dependency_up gauge
sidecall_dependency_up{kind="kafka-producer",name="127.0.0.1:%d"} 0
sidecall_dependency_up{kind="kafka-reply-consumer",name="127.0.0.1:%d/replies"} 0
sidecall_dependency_up{kind="redis",name="127.0.0.1:%d"} 0
`, kafkaPort, kafkaPort, redisPort)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(redisSeries), "sidecall_dependency_up"); err != nil {
		t.Error(err)
	}

	// Reload without the request-reply route; the old snapshot retires.
	b := load(readyConfig(kafkaPort, redisPort, false))
	a.Close()
	defer b.Close()
	deps = set.Dependencies(res)
	if len(deps) != 2 {
		t.Fatalf("after the reload: %s; want the upstream producer and redis only", depsString(deps))
	}
	for _, d := range deps {
		if d.Gates || d.Ready {
			t.Errorf("%s %s: gates=%t ready=%t, want neither", d.Kind, d.Name, d.Gates, d.Ready)
		}
	}
	if !set.Ready(res) {
		t.Errorf("unready with only kafka-upstream and a cache down: %s", depsString(deps))
	}
}

// TestRedisCacheReportsItsServer: a Redis cache whose server answers PING is
// reported ready within a second, and never gates.
func TestRedisCacheReportsItsServer(t *testing.T) {
	port, _ := testredis.Start(t)
	set := plugins.New(plugins.Options{})
	defer set.Close()
	res := flows.NewResources()
	defer res.Close()
	s, err := flows.Load("kong.yml", []byte(fmt.Sprintf(`_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: cached
        paths: [/cached]
        plugins:
          - name: request-callout
            config:
              cache: {strategy: redis, cache_ttl: 60, redis: {host: 127.0.0.1, port: %d}}
              callouts:
                - name: c
                  request: {url: "http://127.0.0.1:1/a"}
`, port)), flows.LoadOptions{Registry: set.Registry, Resources: res, Lua: set.Lua})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		deps := set.Dependencies(res)
		if len(deps) != 1 || deps[0].Kind != "redis" || deps[0].Gates || deps[0].Name != fmt.Sprintf("127.0.0.1:%d", port) {
			t.Fatalf("dependencies: %s", depsString(deps))
		}
		if deps[0].Ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("redis not reported ready within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
