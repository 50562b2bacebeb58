package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestDemoAnswersItsCurlCommands runs the demo and every command it prints.
func TestDemoAnswersItsCurlCommands(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan [2]string, 1)
	var out bytes.Buffer
	var mu sync.Mutex
	done := make(chan error, 1)
	go func() {
		w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(p) })
		done <- runDemo(ctx, demoOptions{listen: "127.0.0.1:0", adminListen: "127.0.0.1:0", log: zap.NewNop(),
			ready: func(base, admin string) { ready <- [2]string{base, admin} }}, w)
	}()
	var base, admin string
	select {
	case urls := <-ready:
		base, admin = urls[0], urls[1]
	case err := <-done:
		t.Fatalf("demo stopped: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("demo did not become ready")
	}
	mu.Lock()
	printed := out.String()
	mu.Unlock()
	for _, s := range demoScenarios {
		t.Run(s.What, func(t *testing.T) {
			if !strings.Contains(printed, s.curl(base)) {
				t.Fatalf("demo did not print %q", s.curl(base))
			}
			req, _ := http.NewRequest(s.Method, base+s.Path, strings.NewReader(s.Body))
			for i := 0; i+1 < len(s.Headers); i += 2 {
				req.Header.Set(s.Headers[i], s.Headers[i+1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != s.Status || !strings.Contains(string(body), s.Expect) {
				t.Fatalf("status %d body %s; want %d with %s", resp.StatusCode, body, s.Status, s.Expect)
			}
			id := resp.Header.Get("X-Correlation-ID")
			if id == "" {
				t.Errorf("no X-Correlation-ID echoed")
			}
			// One id per request: Kafka's correlation id and an error
			// body's request_id are the echoed one.
			var m map[string]any
			_ = json.Unmarshal(body, &m)
			for _, k := range []string{"correlation_id", "request_id"} {
				if v, ok := m[k]; ok && v != id {
					t.Errorf("%s %v, X-Correlation-ID %q: want one id", k, v, id)
				}
			}
			if s.Path == "/quote" && m["correlation_id"] != id {
				t.Errorf("/quote body %s lacks correlation_id %q", body, id)
			}
			if s.Status == 403 && m["request_id"] != id {
				t.Errorf("denied body %s lacks request_id %q", body, id)
			}
		})
	}
	// After the traffic, every metric the dashboard and alerts use is exported.
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scraped, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	names, err := os.ReadFile("../../deploy/grafana/METRICS.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range strings.Fields(string(names)) {
		if !strings.Contains(string(scraped), "\n# TYPE "+name+" ") {
			t.Errorf("/metrics lacks %s, which deploy/grafana uses", name)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
