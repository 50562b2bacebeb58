package kafka

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/sidecall/sidecall/flows"
)

// maxIdemKey bounds a client's key (it becomes a store key).
const maxIdemKey = 255

// fingerprint identifies a request for idempotency: method, path, query
// and body.
func fingerprint(x *flows.Exchange) string {
	h := sha256.New()
	for _, s := range []string{x.Request.Method, x.Request.Path, x.Request.RawQuery} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	h.Write(x.Request.Body)
	return hex.EncodeToString(h.Sum(nil))
}

// idempotent runs the request once per key within ttl: the first claims
// the key and stores what the client got; later ones with the same request
// replay it, or wait for it while pending; a different request is 422.
// A sidecall error (no reply, broker down) frees the key so a retry can
// produce again.
func (p *requestReply) idempotent(ctx context.Context, x *flows.Exchange, key string) error {
	s := p.scale.idem
	if len(key) > maxIdemKey {
		return &flows.HTTPError{Status: 400, Message: s.header + " longer than 255 bytes"}
	}
	if s.store == nil {
		return &flows.HTTPError{Status: 503, Message: "kafka clients not started", Err: errNotReady}
	}
	deadline := time.Now().Add(p.timeout)
	fp := fingerprint(x)
	skey := "idem:" + p.topic + ":" + key
	for range 3 {
		prev, err := s.store.Claim(ctx, skey, &storedReply{FP: fp, Pending: true}, p.timeout+pendingGrace)
		if err != nil {
			return p.idemFail(503, "store_unavailable", "idempotency store unavailable", err)
		}
		if prev == nil {
			err := p.dispatch(ctx, x)
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
			defer cancel()
			if err != nil || x.Reply == nil {
				_ = s.store.Delete(sctx, skey)
				return err
			}
			if perr := s.store.Put(sctx, skey, replyEntry(fp, x.Reply), s.ttl); perr != nil {
				// The client has its answer; free the key rather than leave it pending.
				p.scale.log.Warn("idempotent reply not stored", zap.Error(perr))
				_ = s.store.Delete(sctx, skey)
			}
			return nil
		}
		if prev.FP != fp {
			return p.idemFail(422, "idempotency_conflict", "idempotency key reused with a different request", nil)
		}
		if prev.Pending {
			wctx, cancel := context.WithDeadline(ctx, deadline)
			prev, err = s.store.Wait(wctx, skey)
			cancel()
			switch {
			case ctx.Err() != nil:
				return p.idemFail(499, "canceled", "client went away", ctx.Err())
			case errors.Is(err, context.DeadlineExceeded):
				return p.idemFail(504, "timeout", "the first request with this idempotency key is still pending", err)
			case err != nil:
				return p.idemFail(503, "store_unavailable", "idempotency store unavailable", err)
			case prev == nil:
				continue // the first one failed and freed the key: try again
			case prev.FP != fp:
				return p.idemFail(422, "idempotency_conflict", "idempotency key reused with a different request", nil)
			}
		}
		hs := prev.headers()
		hs.Set("idempotent-replayed", "true")
		p.m.requests.WithLabelValues(p.route, p.topic, "replayed").Inc()
		x.Respond(prev.Status, hs, prev.Body)
		return nil
	}
	return p.idemFail(409, "idempotency_conflict", "idempotency key kept changing hands", nil)
}

func (p *requestReply) idemFail(status int, outcome, msg string, err error) error {
	p.m.requests.WithLabelValues(p.route, p.topic, outcome).Inc()
	return &flows.HTTPError{Status: status, Message: msg, Err: err}
}
