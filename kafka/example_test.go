package kafka

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestExampleResponder builds and runs examples/kafka-responder against
// kfake and sends it a request through the plugin.
func TestExampleResponder(t *testing.T) {
	_, self, _, _ := runtime.Caller(0)
	bin := filepath.Join(t.TempDir(), "kafka-responder")
	gb := exec.Command("go", "build", "-o", bin, "./examples/kafka-responder")
	gb.Dir = filepath.Join(filepath.Dir(self), "..")
	if out, err := gb.CombinedOutput(); err != nil {
		t.Fatalf("building the example: %v\n%s", err, out)
	}
	_, addr := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-brokers", addr, "-topic", "requests", "-format", "protobuf")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "kafka-responder ready") {
				once = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("example responder not ready")
	}
	res := newResources(t)
	p := build(t, res, "kafka-request-reply", rrConfig(addr, "message_format: protobuf\ncorrelation_id_header: x-cid"))
	waitReady(t, res)
	x := exchange("POST", "/hello", "n=1", []byte("hi"), "x-cid", "ex-1")
	if err := access(t, p, x); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(x.Reply.Body, &got); err != nil {
		t.Fatalf("%v: %s", err, x.Reply.Body)
	}
	if x.Reply.Status != 200 || got["path"] != "/hello" || got["body"] != "hi" || got["correlation_id"] != "ex-1" ||
		x.Reply.Headers.Get("x-correlation-id") != "ex-1" || x.Reply.Headers.Get("content-type") != "application/json" {
		t.Fatalf("reply %d %v %s", x.Reply.Status, x.Reply.Headers, x.Reply.Body)
	}
	cancel()
	_ = cmd.Wait() // reports ctx.Err() after Cancel even on a clean exit
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("example exited with status %d", code)
	}
}
