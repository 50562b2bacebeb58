package kafka

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sidecall/sidecall/flows"
)

// storeTimeout bounds a store write made after the client was answered.
const storeTimeout = 5 * time.Second

func asyncKey(topic, id string) string { return "async:" + topic + ":" + id }

// resultID tells whether path is a result URL, <result_path>/<id>, and
// returns the id.
func (a *asyncMode) resultID(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, a.resultPath+"/")
	if !ok || rest == "" || strings.Contains(rest, "/") {
		return "", false
	}
	id, err := url.PathUnescape(rest)
	return id, err == nil && id != ""
}

// accept produces the request and answers 202 with the result URL at once;
// the reply (or the gathered replies, or a 504) is stored when it comes.
func (p *requestReply) accept(ctx context.Context, x *flows.Exchange) error {
	a := p.scale.async
	id := p.requestID(x)
	if a.store == nil {
		return p.fail(id, 503, "unavailable", "kafka clients not started", errNotReady)
	}
	key := asyncKey(p.topic, id)
	// Pending before the produce, so a GET right after the 202 finds it.
	prev, err := a.store.Claim(ctx, key, &storedReply{Pending: true}, a.ttl)
	switch {
	case err != nil:
		return p.fail(id, 503, "store_unavailable", "async result store unavailable", err)
	case prev != nil:
		return p.fail(id, 409, "duplicate_id", "a result with this correlation id already exists", nil)
	}
	n, window := 1, p.timeout
	if g := p.scale.gather; g != nil {
		n, window = g.n, g.window
	}
	w, start, err := p.send(ctx, x, id, n)
	if err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
		_ = a.store.Delete(dctx, key)
		cancel()
		return err
	}
	go p.complete(w, key, start.Add(window), n)
	loc := a.resultPath + "/" + url.PathEscape(id)
	body, _ := json.Marshal(map[string]string{"correlation_id": id, "location": loc, "status": "pending"})
	p.m.requests.WithLabelValues(p.route, p.topic, "accepted").Inc()
	x.Respond(202, flows.Headers{"location": {loc}, "content-type": {"application/json"},
		strings.ToLower(p.names.Correlation): {id}}, body)
	return nil
}

// complete stores the answer for an accepted request. It ends with the
// reply consumer (a reload that drops it), leaving the entry pending until
// its TTL.
func (p *requestReply) complete(w *ReplyWaiter, key string, deadline time.Time, n int) {
	e, outcome := p.await(context.Background(), w, deadline, n)
	p.replies.Cancel(w, outcome == "timeout")
	if e == nil {
		return
	}
	a := p.scale.async
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := a.store.Put(ctx, key, e, a.ttl); err != nil {
		p.scale.log.Warn("kafka async result not stored", zap.String("correlation_id", w.ID), zap.Error(err))
	}
}

// result answers a GET of <result_path>/<id>: the stored answer, 202 with
// Retry-After while pending, 404 when unknown or expired.
func (p *requestReply) result(ctx context.Context, x *flows.Exchange, id string) error {
	a := p.scale.async
	if x.Request.Method != "GET" && x.Request.Method != "HEAD" {
		return &flows.HTTPError{Status: 405, Message: "method not allowed on async results", Headers: flows.Headers{"allow": {"GET, HEAD"}}}
	}
	if a.store == nil {
		return p.fail(id, 503, "unavailable", "kafka clients not started", errNotReady)
	}
	e, err := a.store.Get(ctx, asyncKey(p.topic, id))
	switch {
	case err != nil:
		return p.fail(id, 503, "store_unavailable", "async result store unavailable", err)
	case e == nil:
		return &flows.HTTPError{Status: 404, Message: "no result for this id: unknown or expired (correlation id " + id + ")"}
	case e.Pending:
		body, _ := json.Marshal(map[string]string{"correlation_id": id, "status": "pending"})
		x.Respond(202, flows.Headers{"retry-after": {"1"}, "content-type": {"application/json"},
			strings.ToLower(p.names.Correlation): {id}}, body)
		return nil
	}
	x.Respond(e.Status, e.headers(), e.Body)
	return nil
}
