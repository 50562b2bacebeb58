package httpx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// TimeoutError is a socket timeout of one phase (connect, write, read): a
// transport error that reports itself as a timeout.
type TimeoutError struct {
	Phase string
	Limit time.Duration
}

func (e *TimeoutError) Error() string { return fmt.Sprintf("%s timeout after %s", e.Phase, e.Limit) }

// Timeout and Temporary make it a net.Error that is a timeout.
func (e *TimeoutError) Timeout() bool   { return true }
func (e *TimeoutError) Temporary() bool { return true }

// Watchdog applies per-operation socket timeouts to one HTTP attempt, as
// nginx cosockets (and so Kong) do: it cancels the attempt's context with a
// *TimeoutError when the current phase's timer expires; each operation
// re-arms it with Arm.
type Watchdog struct {
	mu      sync.Mutex
	t       *time.Timer
	phase   string
	limit   time.Duration
	cancel  context.CancelCauseFunc
	stopped bool
}

// NewWatchdog returns a watchdog that ends an attempt through cancel.
func NewWatchdog(cancel context.CancelCauseFunc) *Watchdog { return &Watchdog{cancel: cancel} }

// Arm starts phase's timer of d, replacing the running one.
func (w *Watchdog) Arm(phase string, d time.Duration) {
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

func (w *Watchdog) fire() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	err := &TimeoutError{Phase: w.phase, Limit: w.limit}
	w.stopped = true
	w.mu.Unlock()
	w.cancel(err)
}

// Stop ends the watchdog; a timer already firing has no effect after it.
func (w *Watchdog) Stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.t != nil {
		w.t.Stop()
	}
}

// Failure names the timeout behind err, if one is: the watchdog's, or a
// dial or handshake timeout of the transport racing it (reported as the
// current phase's). Otherwise it returns err.
func (w *Watchdog) Failure(actx context.Context, err error) error {
	var te *TimeoutError
	if errors.As(context.Cause(actx), &te) {
		return te
	}
	var ne net.Error
	if actx.Err() == nil && errors.As(err, &ne) && ne.Timeout() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.phase != "" {
			return &TimeoutError{Phase: w.phase, Limit: w.limit}
		}
	}
	return err
}

// WatchedReader re-arms the watchdog on every read: before each read for
// "write" (a request body: each read feeds the next send), after each read
// that returned data for "read" (a response body).
type WatchedReader struct {
	R     io.Reader
	W     *Watchdog
	Phase string
	D     time.Duration
}

func (b WatchedReader) Read(p []byte) (int, error) {
	if b.Phase == "write" {
		b.W.Arm(b.Phase, b.D)
	}
	n, err := b.R.Read(p)
	if n > 0 && b.Phase == "read" {
		b.W.Arm(b.Phase, b.D)
	}
	return n, err
}
