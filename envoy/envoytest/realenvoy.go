package envoytest

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sidecall/sidecall/envoy"
	"github.com/sidecall/sidecall/internal/netport"
)

// EnvoyEnv names the environment variable holding the path of an Envoy
// binary: when set, harnesses send requests through that Envoy instead of
// the stand-in.
const EnvoyEnv = "SIDECALL_E2E_ENVOY"

// startRealEnvoy runs bin with envoy/sidecar.yaml rewritten for this
// harness (see envoy.SidecarBootstrap) and returns its listener's URL. A
// test whose stand-in settings a bootstrap cannot carry is skipped.
func startRealEnvoy(t testing.TB, bin string, c envoy.Config, grpcAddr, upstream string) string {
	t.Helper()
	listen, admin := netport.Stable(t), netport.Stable(t)
	bs, unsupported, err := envoy.SidecarBootstrap(c, listen, admin, grpcAddr, upstream)
	if err != nil {
		t.Fatalf("%s: bootstrap: %v", EnvoyEnv, err)
	}
	if len(unsupported) > 0 {
		t.Skipf("%s: the test sets %s on the stand-in, which a bootstrap cannot carry", EnvoyEnv, strings.Join(unsupported, ", "))
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "envoy.json")
	if err := os.WriteFile(cfg, bs, 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "envoy.log")
	cmd := exec.Command(bin, "-c", cfg, "--use-dynamic-base-id", "--concurrency", "1",
		"-l", "warning", "--log-path", logPath)
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: starting %s: %v", EnvoyEnv, bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	ready := fmt.Sprintf("http://127.0.0.1:%d/ready", admin)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(logPath)
			t.Fatalf("%s: Envoy exited (%v):\n%s", EnvoyEnv, err, log)
		default:
		}
		if resp, err := client.Get(ready); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return fmt.Sprintf("http://127.0.0.1:%d", listen)
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("%s: Envoy not ready after 30s:\n%s", EnvoyEnv, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
