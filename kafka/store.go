package kafka

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sidecall/sidecall/flows"
)

// storedReply is what idempotency and async mode keep per key: a pending
// marker, then the answer the client got.
type storedReply struct {
	FP      string      `json:"fp,omitempty"` // request fingerprint (idempotency)
	Pending bool        `json:"pending,omitempty"`
	Status  int         `json:"status,omitempty"`
	Headers [][2]string `json:"headers,omitempty"`
	Body    []byte      `json:"body,omitempty"`
}

func (e *storedReply) headers() flows.Headers {
	hs := flows.Headers{}
	for _, h := range e.Headers {
		hs.Add(h[0], h[1])
	}
	return hs
}

func replyEntry(fp string, r *flows.Reply) *storedReply {
	e := &storedReply{FP: fp, Status: r.Status, Body: r.Body}
	for _, k := range r.Headers.Keys() {
		for _, v := range r.Headers.Values(k) {
			e.Headers = append(e.Headers, [2]string{k, v})
		}
	}
	return e
}

// replyStore keeps storedReply entries with a TTL: in process (memory) or
// in Redis, where every replica sees them.
type replyStore interface {
	io.Closer
	// Claim stores e under key unless key exists; it returns the entry
	// found then, nil when e was stored.
	Claim(ctx context.Context, key string, e *storedReply, ttl time.Duration) (*storedReply, error)
	Put(ctx context.Context, key string, e *storedReply, ttl time.Duration) error
	Get(ctx context.Context, key string) (*storedReply, error) // nil: absent or expired
	Delete(ctx context.Context, key string) error
	// Wait returns the entry once it is no longer pending (nil if it went
	// away), or ctx's error.
	Wait(ctx context.Context, key string) (*storedReply, error)
}

// memoryStore is a replyStore for one process; waiters are woken by a
// channel closed on every change of their key.
type memoryStore struct {
	mu    sync.Mutex
	m     map[string]*memEntry
	ops   int
	swept time.Time
}

type memEntry struct {
	e       *storedReply
	expires time.Time
	changed chan struct{}
}

// maxMemEntries bounds the memory store: when full of live entries, new
// keys are refused (503) rather than growing without limit.
const maxMemEntries = 1000000

var errStoreFull = errors.New("memory store full")

func newMemoryStore() *memoryStore { return &memoryStore{m: map[string]*memEntry{}} }

// liveLocked returns key's entry unless expired; it sweeps now and then so
// keys nobody asks for again do not pile up.
func (s *memoryStore) liveLocked(key string, now time.Time) *memEntry {
	// When full, sweep at most once a second: a sweep walks every entry.
	if s.ops++; s.ops%4096 == 0 || (len(s.m) >= maxMemEntries && now.Sub(s.swept) > time.Second) {
		s.sweepLocked(now)
	}
	v := s.m[key]
	if v != nil && now.After(v.expires) {
		s.dropLocked(key, v)
		return nil
	}
	return v
}

func (s *memoryStore) sweepLocked(now time.Time) {
	s.swept = now
	for k, v := range s.m {
		if now.After(v.expires) {
			s.dropLocked(k, v)
		}
	}
}

func (s *memoryStore) dropLocked(key string, v *memEntry) {
	delete(s.m, key)
	close(v.changed)
}

func (s *memoryStore) setLocked(key string, e *storedReply, ttl time.Duration, now time.Time) {
	if old := s.m[key]; old != nil {
		close(old.changed)
	}
	s.m[key] = &memEntry{e: e, expires: now.Add(ttl), changed: make(chan struct{})}
}

func (s *memoryStore) Claim(_ context.Context, key string, e *storedReply, ttl time.Duration) (*storedReply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if v := s.liveLocked(key, now); v != nil {
		return v.e, nil
	}
	if len(s.m) >= maxMemEntries {
		return nil, errStoreFull
	}
	s.setLocked(key, e, ttl, now)
	return nil, nil
}

func (s *memoryStore) Put(_ context.Context, key string, e *storedReply, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setLocked(key, e, ttl, time.Now())
	return nil
}

func (s *memoryStore) Get(_ context.Context, key string) (*storedReply, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.liveLocked(key, time.Now()); v != nil {
		return v.e, nil
	}
	return nil, nil
}

func (s *memoryStore) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v := s.m[key]; v != nil {
		s.dropLocked(key, v)
	}
	return nil
}

func (s *memoryStore) Wait(ctx context.Context, key string) (*storedReply, error) {
	for {
		s.mu.Lock()
		v := s.liveLocked(key, time.Now())
		if v == nil || !v.e.Pending {
			s.mu.Unlock()
			if v == nil {
				return nil, nil
			}
			return v.e, nil
		}
		ch, left := v.changed, time.Until(v.expires)
		s.mu.Unlock()
		t := time.NewTimer(left) // expiry closes nothing by itself
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		t.Stop()
	}
}

func (s *memoryStore) Close() error { return nil }

// redisConfig is the subset of Kong's standard Redis block (as in
// request-callout's cache.redis) that sidecall supports: standalone Redis.
type redisConfig struct {
	Host              string `yaml:"host"`
	Port              int    `yaml:"port"`
	Username          string `yaml:"username"`
	Password          string `yaml:"password"`
	Database          int    `yaml:"database"`
	Timeout           *int   `yaml:"timeout"`
	ConnectTimeout    int    `yaml:"connect_timeout"`
	SendTimeout       int    `yaml:"send_timeout"`
	ReadTimeout       int    `yaml:"read_timeout"`
	KeepalivePoolSize int    `yaml:"keepalive_pool_size"`
	SSL               bool   `yaml:"ssl"`
	SSLVerify         bool   `yaml:"ssl_verify"`
	ServerName        string `yaml:"server_name"`
}

func defaultRedisConfig() redisConfig {
	return redisConfig{Host: "127.0.0.1", Port: 6379, ConnectTimeout: 2000, SendTimeout: 2000, ReadTimeout: 2000, KeepalivePoolSize: 256}
}

func validateRedis(b *flows.Builder, at flows.Path, r *redisConfig) {
	if r.Host == "" {
		b.Errorf(at.Key("host"), "required when strategy is redis")
	}
	checkRange(b, at.Key("port"), r.Port, 1, 65535)
	checkRange(b, at.Key("database"), r.Database, 0, 1<<16)
	for _, f := range []struct {
		name string
		v    int
	}{{"connect_timeout", r.ConnectTimeout}, {"send_timeout", r.SendTimeout}, {"read_timeout", r.ReadTimeout}} {
		checkRange(b, at.Key(f.name), f.v, 1, 3600000)
	}
	if r.Timeout != nil {
		checkRange(b, at.Key("timeout"), *r.Timeout, 0, 3600000)
	}
	checkRange(b, at.Key("keepalive_pool_size"), r.KeepalivePoolSize, 1, 100000)
}

// resolved applies timeout (Kong's shorthand for all three) and drops it.
func (r redisConfig) resolved() redisConfig {
	if r.Timeout != nil && *r.Timeout > 0 {
		r.ConnectTimeout, r.SendTimeout, r.ReadTimeout = *r.Timeout, *r.Timeout, *r.Timeout
	}
	r.Timeout = nil
	return r
}

func (r redisConfig) options() *redis.Options {
	r = r.resolved()
	ct, st, rt := r.ConnectTimeout, r.SendTimeout, r.ReadTimeout
	o := &redis.Options{
		Addr: net.JoinHostPort(r.Host, strconv.Itoa(r.Port)), DB: r.Database, Username: r.Username, Password: r.Password,
		DialTimeout: time.Duration(ct) * time.Millisecond, WriteTimeout: time.Duration(st) * time.Millisecond,
		ReadTimeout: time.Duration(rt) * time.Millisecond, PoolSize: r.KeepalivePoolSize,
		MaxRetries: -1, // one try: a down Redis answers 503 quickly
	}
	if r.SSL {
		o.TLSConfig = &tls.Config{InsecureSkipVerify: !r.SSLVerify, ServerName: r.ServerName, MinVersion: tls.VersionTLS12} //nolint:gosec // Kong's ssl_verify
	}
	return o
}

// redisStore keeps entries as JSON under sidecall:kafka:<key>. Wait polls:
// a pub/sub subscription would hold a connection per waiting request.
type redisStore struct{ c *redis.Client }

const redisPrefix = "sidecall:kafka:"

func (s *redisStore) Claim(ctx context.Context, key string, e *storedReply, ttl time.Duration) (*storedReply, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	// SET NX then GET can miss an entry expiring in between: try again.
	for range 3 {
		ok, err := s.c.SetNX(ctx, redisPrefix+key, b, ttl).Result()
		if err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		if ok {
			return nil, nil
		}
		prev, err := s.Get(ctx, key)
		if err != nil || prev != nil {
			return prev, err
		}
	}
	return nil, errors.New("redis: key keeps expiring")
}

func (s *redisStore) Put(ctx context.Context, key string, e *storedReply, ttl time.Duration) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := s.c.Set(ctx, redisPrefix+key, b, ttl).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

func (s *redisStore) Get(ctx context.Context, key string) (*storedReply, error) {
	b, err := s.c.Get(ctx, redisPrefix+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	e := &storedReply{}
	if err := json.Unmarshal(b, e); err != nil {
		return nil, fmt.Errorf("redis entry %s: %w", key, err)
	}
	return e, nil
}

func (s *redisStore) Delete(ctx context.Context, key string) error {
	if err := s.c.Del(ctx, redisPrefix+key).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

func (s *redisStore) Wait(ctx context.Context, key string) (*storedReply, error) {
	d := 10 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
		e, err := s.Get(ctx, key)
		if err != nil || e == nil || !e.Pending {
			return e, err
		}
		t.Reset(d)
		d = min(2*d, 200*time.Millisecond)
	}
}

func (s *redisStore) Close() error { return s.c.Close() }

// acquireStore takes the store for strategy: one memory store per process
// (so a result GET on another route finds the entry), one Redis client per
// Redis settings.
func acquireStore(b *flows.Builder, strategy string, r *redisConfig) (replyStore, error) {
	key, mk := "kafka-store|memory", func() (io.Closer, error) { return newMemoryStore(), nil }
	if strategy == "redis" {
		o := r.options()
		// Hashed: the key holds the password.
		key = fmt.Sprintf("kafka-store|redis|%x", sha256.Sum256([]byte(fmt.Sprintf("%+v", r.resolved()))))
		mk = func() (io.Closer, error) { return &redisStore{c: redis.NewClient(o)}, nil }
	}
	c, err := b.Acquire(key, mk)
	if err != nil {
		return nil, fmt.Errorf("making %s store: %w", strategy, err)
	}
	return c.(replyStore), nil
}
