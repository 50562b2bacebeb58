package httpx

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

func TestValidHeaderName(t *testing.T) {
	for _, s := range []string{"x-request-id", "X_Custom.1", "a!#$%&'*+-.^_`|~"} {
		if !ValidHeaderName(s) {
			t.Errorf("%q: want valid", s)
		}
	}
	for _, s := range []string{"", "a b", "a:b", "a\r\nb", "é", "(x)", "a/b", "a\x00"} {
		if ValidHeaderName(s) {
			t.Errorf("%q: want invalid", s)
		}
	}
}

func TestValidMethod(t *testing.T) {
	for m, want := range map[string]bool{"GET": true, "PURGE": true, "": false, "get": false, "GE T": false, "GET1": false} {
		if ValidMethod(m) != want {
			t.Errorf("%q: want %v", m, want)
		}
	}
}

func TestNotForwarded(t *testing.T) {
	for _, h := range []string{"connection", "te", "upgrade", "host", "content-length", "proxy-authorization"} {
		if !NotForwarded(h) {
			t.Errorf("%s: want not forwarded", h)
		}
	}
	for _, h := range []string{"authorization", "x-request-id", "content-type"} {
		if NotForwarded(h) || HopByHop(h) {
			t.Errorf("%s: want forwarded", h)
		}
	}
	if HopByHop("host") {
		t.Error("host is not hop-by-hop")
	}
}

func TestWatchdogCancelsWithThePhaseTimeout(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	w := NewWatchdog(cancel)
	w.Arm("connect", time.Hour)
	w.Arm("read", 10*time.Millisecond) // re-armed: the read phase's limit applies
	<-ctx.Done()
	err := w.Failure(ctx, errors.New("transport gave up"))
	var te *TimeoutError
	if !errors.As(err, &te) || te.Phase != "read" || err.Error() != "read timeout after 10ms" {
		t.Fatalf("got %v, want the read timeout", err)
	}
	// Stopped: a later Arm never fires.
	ctx2, cancel2 := context.WithCancelCause(context.Background())
	w2 := NewWatchdog(cancel2)
	w2.Stop()
	w2.Arm("read", time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	if ctx2.Err() != nil {
		t.Fatal("a stopped watchdog fired")
	}
	if err := w2.Failure(ctx2, io.EOF); err != io.EOF {
		t.Fatalf("no timeout: got %v, want the error as it is", err)
	}
}
