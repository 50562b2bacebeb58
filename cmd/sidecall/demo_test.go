package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
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
			for range max(s.Times, 1) {
				resp, body, m := demoDo(t, s, base)
				id := resp.Header.Get("X-Correlation-ID")
				if id == "" {
					t.Errorf("no X-Correlation-ID echoed")
				}
				// One id per request: Kafka's correlation id and an error
				// body's request_id are the echoed one.
				for _, k := range []string{"correlation_id", "request_id"} {
					if v, ok := m[k]; ok && v != id {
						t.Errorf("%s %v, X-Correlation-ID %q: want one id", k, v, id)
					}
				}
				if (s.Path == "/quote" || s.Path == "/report") && m["correlation_id"] != id {
					t.Errorf("%s body %s lacks correlation_id %q", s.Path, body, id)
				}
				if s.Status == 403 && m["request_id"] != id {
					t.Errorf("denied body %s lacks request_id %q", body, id)
				}
				if s.Path == "/recommendations" && resp.Header.Get("X-Sidecall-Completed") != "false" {
					t.Errorf("continued callout failure without X-Sidecall-Completed: false: %v", resp.Header)
				}
				if s.Result != "" {
					demoResult(t, base, resp.Header.Get("Location"), id, s.Result)
				}
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
	if !strings.Contains(string(scraped), "\nsidecall_callout_breaker_state{target=\"http://127.0.0.1:") ||
		!regexp.MustCompile(`\nsidecall_callout_breaker_state\{[^}]*\} 1\n`).Match(scraped) {
		t.Errorf("/metrics does not show the demo's breaker open")
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

// demoDo sends s once and checks its status and body.
func demoDo(t *testing.T, s scenario, base string) (*http.Response, []byte, map[string]any) {
	t.Helper()
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
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	return resp, body, m
}

// demoResult polls an async result until it is 200: the reply to id.
func demoResult(t *testing.T, base, loc, id, want string) {
	t.Helper()
	if loc != "/report/results/"+id {
		t.Fatalf("Location %q, want /report/results/%s", loc, id)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + loc)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode == 200:
			var m map[string]any
			_ = json.Unmarshal(body, &m)
			if !strings.Contains(string(body), want) || m["correlation_id"] != id {
				t.Fatalf("result %s, want %s for correlation id %s", body, want, id)
			}
			return
		case resp.StatusCode != 202 || resp.Header.Get("Retry-After") == "":
			t.Fatalf("result: status %d %v %s, want 202 with Retry-After while pending", resp.StatusCode, resp.Header, body)
		case time.Now().After(deadline):
			t.Fatal("async result still pending after 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
