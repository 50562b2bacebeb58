package callout

import (
	"context"
	"net/http"
	"time"
)

// idempotent methods may be sent twice: hedging is on for them only,
// unless hedge_unsafe.
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

type answer struct {
	status int
	h      http.Header
	body   []byte
	err    error
}

// hedged makes one attempt; with hedge_after_ms set (and an idempotent
// method, or hedge_unsafe) a second request goes out when the first has
// not answered by then. The first response wins and the other request is
// canceled; a transport error waits for the other request, if any. Both
// requests have ended when it returns: none outlives the attempt.
func (p *Plugin) hedged(ctx context.Context, c *callout, s *sendReq) (int, http.Header, []byte, error) {
	d := c.res.hedge
	if d <= 0 || (!c.res.unsafe && !idempotent(s.method)) {
		return p.do(ctx, c, s)
	}
	hctx, cancel := context.WithCancel(ctx)
	ch := make(chan answer, 2)
	send := func() {
		var a answer
		a.status, a.h, a.body, a.err = p.do(hctx, c, s)
		ch <- a
	}
	go send()
	pending := 1
	t := time.NewTimer(d)
	timer := t.C
	var got answer
	for {
		select {
		case <-timer:
			timer = nil
			if c.res.hedges != nil {
				c.res.hedges.Inc()
			}
			pending++
			go send()
			continue
		case got = <-ch:
			pending--
		}
		if got.err == nil || pending == 0 || timer != nil {
			break // a response, the last request, or an error before the hedge
		}
	}
	t.Stop()
	cancel()
	for ; pending > 0; pending-- {
		<-ch
	}
	return got.status, got.h, got.body, got.err
}
