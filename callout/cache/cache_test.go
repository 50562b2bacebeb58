package cache

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemoryTTLAndMiss(t *testing.T) {
	m, err := NewMemory(1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	now := time.Unix(1000, 0)
	m.now = func() time.Time { return now }
	ctx := context.Background()
	if _, ok, err := m.Get(ctx, "k"); ok || err != nil {
		t.Fatalf("empty cache: ok=%v err=%v", ok, err)
	}
	if err := m.Set(ctx, "k", []byte("v"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if v, ok, _ := m.Get(ctx, "k"); !ok || string(v) != "v" {
		t.Fatalf("hit: %q %v", v, ok)
	}
	now = now.Add(10 * time.Second)
	if _, ok, _ := m.Get(ctx, "k"); ok {
		t.Fatal("entry outlived its TTL")
	}
}

func TestNewMemoryRejectsZeroSize(t *testing.T) {
	if _, err := NewMemory(0, time.Second); err == nil {
		t.Fatal("size 0 accepted")
	}
}

func TestUnwrapShort(t *testing.T) {
	if _, ok := unwrap([]byte{1, 2}, time.Now()); ok {
		t.Fatal("short entry accepted")
	}
}

func TestFlightCollapses(t *testing.T) {
	var f Flight
	var calls atomic.Int32
	release := make(chan struct{})
	done := make(chan struct{})
	for i := 0; i < 3; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			v, _, err := f.Do(context.Background(), "k", func() (any, error) {
				calls.Add(1)
				<-release
				return 7, nil
			})
			if err != nil || v != 7 {
				t.Error(v, err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	for i := 0; i < 3; i++ {
		<-done
	}
	if calls.Load() != 1 {
		t.Fatalf("calls = %d", calls.Load())
	}
}
