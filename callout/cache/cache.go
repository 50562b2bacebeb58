// Package cache stores request-callout results: in process memory
// (bigcache) or in Redis (shared by replicas), behind one interface, plus a
// singleflight group so concurrent misses for one key make one call.
//
// Entries carry their own expiry (an 8-byte Unix-nanosecond prefix), so the
// TTL is exact for memory too; bigcache's life window only bounds eviction.
package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"time"

	"golang.org/x/sync/singleflight"
)

// Cache is a byte store with per-entry TTL. Errors mean the store is
// unreachable; a miss is (nil, false, nil).
type Cache interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Set(ctx context.Context, key string, val []byte, ttl time.Duration) error
	Close() error
}

// ErrClosed is returned by a closed cache.
var ErrClosed = errors.New("cache closed")

func wrap(val []byte, ttl time.Duration, now time.Time) []byte {
	out := make([]byte, 8+len(val))
	binary.BigEndian.PutUint64(out, uint64(now.Add(ttl).UnixNano()))
	copy(out[8:], val)
	return out
}

func unwrap(b []byte, now time.Time) ([]byte, bool) {
	if len(b) < 8 {
		return nil, false
	}
	exp := int64(binary.BigEndian.Uint64(b))
	if now.UnixNano() >= exp {
		return nil, false
	}
	return b[8:], true
}

// Flight collapses concurrent calls for the same key into one.
type Flight struct{ g singleflight.Group }

// Do runs fn once for all concurrent callers of key. A caller whose ctx
// ends stops waiting (the call itself goes on for the others). shared tells
// whether the result was given to more than one caller.
func (f *Flight) Do(ctx context.Context, key string, fn func() (any, error)) (v any, shared bool, err error) {
	ch := f.g.DoChan(key, fn)
	select {
	case r := <-ch:
		return r.Val, r.Shared, r.Err
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}
