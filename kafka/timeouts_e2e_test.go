package kafka_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sidecall/sidecall/envoy/envoytest"
)

// TestE2ENoReplyOutlastsEnvoyMessageTimeout: behind the stand-in set up like
// the shipped Envoy (message_timeout 2s, max_message_timeout 10s; no
// longEnvoy), a kafka-request-reply with reply_timeout 2500ms that gets no
// reply answers sidecall's own JSON 504 after reply_timeout, not Envoy's
// bare 504 after 2s: sidecall sends override_message_timeout first.
func TestE2ENoReplyOutlastsEnvoyMessageTimeout(t *testing.T) {
	_, addr := e2eCluster(t, 0)
	h := envoytest.Start(t, deck(addr, "reply_timeout: 2500", ""), envoytest.Options{})
	waitKafkaReady(t, h)
	c := client(t)
	start := time.Now()
	a := send(c, h, "GET", "/rr/none", "")
	el := time.Since(start)
	if a.err != nil || a.status != 504 {
		t.Fatalf("got %v %d %s, want 504", a.err, a.status, a.body)
	}
	if el < 2500*time.Millisecond || el > 3500*time.Millisecond {
		t.Errorf("504 after %v, want just after reply_timeout (2.5s)", el)
	}
	if e := decodeError(t, a); !strings.Contains(e.Message, "no kafka reply within 2.5s") {
		t.Errorf("504 %q, want sidecall's own JSON error", a.body)
	}
	if !h.RealEnvoy {
		s := h.Proxy.Stats().Snapshot()
		if s["override_message_timeout_received"] < 1 || s["message_timeouts"] != 0 {
			t.Errorf("stats %v, want the override taken and no Envoy timeout", s)
		}
	}
}
