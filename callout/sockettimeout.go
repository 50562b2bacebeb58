package callout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// timeoutError is a callout socket timeout (http_opts.timeouts): a
// transport error reported as a timeout.
type timeoutError struct {
	phase string // connect, write or read
	limit time.Duration
}

func (e *timeoutError) Error() string {
	return fmt.Sprintf("%s timeout after %s", e.phase, e.limit)
}

// Timeout and Temporary make it a net.Error that is a timeout.
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

// watchdog applies the socket timeouts of one attempt like nginx
// cosockets do, per operation: it cancels the attempt when the current
// phase's timer expires; each operation re-arms it.
type watchdog struct {
	mu      sync.Mutex
	t       *time.Timer
	phase   string
	limit   time.Duration
	cancel  context.CancelCauseFunc
	stopped bool
}

func (w *watchdog) arm(phase string, d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.phase, w.limit = phase, d
	if w.t == nil {
		w.t = time.AfterFunc(d, w.fire)
		return
	}
	w.t.Reset(d)
}

func (w *watchdog) fire() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	err := &timeoutError{phase: w.phase, limit: w.limit}
	w.stopped = true
	w.mu.Unlock()
	w.cancel(err)
}

func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.t != nil {
		w.t.Stop()
	}
}

// failure names the timeout behind err, if one is: the watchdog's, or a
// dial or handshake timeout of the transport racing it (reported as the
// phase's timeout). Otherwise it returns err.
func (w *watchdog) failure(actx context.Context, err error) error {
	var te *timeoutError
	if errors.As(context.Cause(actx), &te) {
		return te
	}
	var ne net.Error
	if actx.Err() == nil && errors.As(err, &ne) && ne.Timeout() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.phase != "" {
			return &timeoutError{phase: w.phase, limit: w.limit}
		}
	}
	return err
}

// watchedReader re-arms the watchdog's phase timeout on every read: the
// request body (each read feeds the next send) and the response body.
type watchedReader struct {
	r     io.Reader
	w     *watchdog
	phase string
	d     time.Duration
}

func (b watchedReader) Read(p []byte) (int, error) {
	if b.phase == "write" {
		b.w.arm(b.phase, b.d)
	}
	n, err := b.r.Read(p)
	if n > 0 && b.phase == "read" {
		b.w.arm(b.phase, b.d)
	}
	return n, err
}
