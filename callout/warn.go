package callout

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/sidecall/sidecall/flows"
	"go.uber.org/zap"
)

// warnLimit lets one failure line a second through for a callout and
// counts the lines it held back, reported by the next line let through.
type warnLimit struct {
	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// allow reports whether a line may be logged now, and how many were
// suppressed since the last one.
func (l *warnLimit) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.next) {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.next, l.suppressed = now.Add(time.Second), 0
	return true, n
}

// warnFailed logs a callout that failed without an answer (connection
// refused, timeout, refused url) at WARN: at most one line a second per
// callout, on the plugin goroutine. x.Log carries request_id when the
// request had an id at its start; otherwise the line adds the one the
// request gets now.
func (p *Plugin) warnFailed(x *flows.Exchange, c *callout, msg, reason string, err error) {
	ok, suppressed := c.warn.allow(time.Now())
	if !ok {
		return
	}
	fields := []zap.Field{zap.String("callout", c.name), zap.String("route", p.scope.Route),
		zap.String("reason", reason), zap.Error(err)}
	if x.ID == "" {
		fields = append(fields, zap.String("request_id", x.EnsureID()))
	}
	if suppressed > 0 {
		fields = append(fields, zap.Int("suppressed", suppressed))
	}
	x.Log.Warn(msg, fields...)
}

// failReason names a transport failure for the log: timeout,
// connection_refused, breaker_open or error.
func failReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.Is(err, errBreakerOpen):
		return "breaker_open"
	}
	return "error"
}
