package kafka

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/IBM/sarama"
	"go.opentelemetry.io/otel/trace"

	"github.com/sidecall/sidecall/flows"
)

// RegisterN is Register for n replies (scatter-gather): the waiter stays
// until n replies came or it is cancelled, and C buffers all n.
func (r *replyConsumer) RegisterN(id string, n, maxPending int) (*ReplyWaiter, error) {
	w, err := r.Register(id, maxPending)
	if err != nil || n <= 1 {
		return w, err
	}
	c := make(chan *sarama.ConsumerMessage, n)
	r.mu.Lock()
	w.c, w.C, w.left = c, c, n
	r.mu.Unlock()
	return w, nil
}

// last counts one reply handed to w and tells whether no more are
// expected (always for a plain waiter, whose left is 0); r.mu held.
func (w *ReplyWaiter) last() bool {
	w.left--
	return w.left <= 0
}

// gatheredReply is one reply in the gather answer; body as in the JSON
// envelope: text, or base64 with body_base64.
type gatheredReply struct {
	Status     int               `json:"status"`
	Headers    map[string]string `json:"headers"`
	Body       string            `json:"body"`
	BodyBase64 bool              `json:"body_base64,omitempty"`
}

// await waits until deadline for w's reply (n 1) or replies (n > 1, the
// gather answer) and returns the answer and the outcome; nil when ctx is
// done (outcome canceled) or the reply consumer stopped.
func (p *requestReply) await(ctx context.Context, w *ReplyWaiter, deadline time.Time, n int) (*storedReply, string) {
	_, span := startSpan(ctx, "receive", trace.SpanKindConsumer, p.replyTopic, w.ID)
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	var got []gatheredReply
	for {
		select {
		case m := <-w.C:
			rep, err := DecodeReply(p.format, p.names, m.Value, m.Headers)
			if err != nil {
				p.replies.malformed.Inc()
				if n <= 1 {
					endSpan(span, "bad_reply", err)
					return jsonError(502, "malformed kafka reply (correlation id "+w.ID+")"), "bad_reply"
				}
				continue
			}
			if n <= 1 {
				endSpan(span, "replied", nil)
				e := &storedReply{Status: int(rep.Status), Body: rep.Body}
				for _, h := range rep.Headers {
					e.Headers = append(e.Headers, [2]string{h.Name, h.Value})
				}
				return e, "replied"
			}
			g := gatheredReply{Status: int(rep.Status), Headers: map[string]string{}}
			for _, h := range rep.Headers {
				k := strings.ToLower(h.Name)
				if v, ok := g.Headers[k]; ok {
					g.Headers[k] = v + ", " + h.Value
				} else {
					g.Headers[k] = h.Value
				}
			}
			if utf8.Valid(rep.Body) {
				g.Body = string(rep.Body)
			} else {
				g.Body, g.BodyBase64 = base64.StdEncoding.EncodeToString(rep.Body), true
			}
			if got = append(got, g); len(got) == n {
				endSpan(span, "replied", nil)
				return gatherAnswer(got, true), "replied"
			}
		case <-timer.C:
			if n > 1 {
				endSpan(span, "partial", nil)
				return gatherAnswer(got, false), "partial"
			}
			endSpan(span, "timeout", context.DeadlineExceeded)
			return jsonError(504, "no kafka reply within "+p.timeout.String()+" (correlation id "+w.ID+")"), "timeout"
		case <-ctx.Done():
			endSpan(span, "canceled", ctx.Err())
			return nil, "canceled"
		case <-p.replies.stop:
			endSpan(span, "stopped", nil)
			return nil, "stopped"
		}
	}
}

func gatherAnswer(got []gatheredReply, complete bool) *storedReply {
	if got == nil {
		got = []gatheredReply{}
	}
	b, _ := json.Marshal(struct {
		Replies  []gatheredReply `json:"replies"`
		Complete bool            `json:"complete"`
	}{got, complete})
	return &storedReply{Status: 200, Headers: [][2]string{{"content-type", "application/json"}}, Body: b}
}

// gatherCall produces the request and answers with every reply that came
// within window_ms (at most gather.replies).
func (p *requestReply) gatherCall(ctx context.Context, x *flows.Exchange) error {
	g := p.scale.gather
	id := p.requestID(x)
	w, start, err := p.send(ctx, x, id, g.n)
	if err != nil {
		return err
	}
	e, outcome := p.await(ctx, w, start.Add(g.window), g.n)
	p.replies.Cancel(w, false) // later replies are not late: the window is over
	if e == nil {
		return p.fail(id, 499, "canceled", "client went away", ctx.Err())
	}
	p.m.requests.WithLabelValues(p.route, p.topic, outcome).Inc()
	if g.lua != nil {
		return p.gatherLua(ctx, x, e)
	}
	x.Respond(e.Status, e.headers(), e.Body)
	return nil
}

// Keys of kong.ctx.shared that gather.by_lua reads.
const (
	repliesKey  = "kafka_replies"          // [{status, headers, body, body_base64}]
	completeKey = "kafka_replies_complete" // all replies came within the window
)

// gatherLua answers through gather.by_lua, which finds the replies in
// kong.ctx.shared.kafka_replies and answers with kong.response.exit; the
// JSON answer when it does not. The replies are decoded from that answer,
// so both show the same objects.
func (p *requestReply) gatherLua(ctx context.Context, x *flows.Exchange, e *storedReply) error {
	var v struct {
		Replies  []any `json:"replies"`
		Complete bool  `json:"complete"`
	}
	if err := json.Unmarshal(e.Body, &v); err != nil {
		return &flows.HTTPError{Status: 500, Message: "An unexpected error occurred", Err: err}
	}
	if x.Shared == nil {
		x.Shared = map[string]any{}
	}
	x.Shared[repliesKey], x.Shared[completeKey] = v.Replies, v.Complete
	if err := p.scale.gather.lua.Run(ctx, x); err != nil {
		return err
	}
	if x.Reply == nil {
		x.Respond(e.Status, e.headers(), e.Body)
	}
	return nil
}
