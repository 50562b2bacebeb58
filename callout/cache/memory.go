package cache

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/allegro/bigcache/v3"
)

// Memory is a per-process cache backed by bigcache.
type Memory struct {
	bc  *bigcache.BigCache
	now func() time.Time
}

// NewMemory returns a memory cache holding at most sizeMB megabytes whose
// entries are evicted no earlier than maxTTL.
func NewMemory(sizeMB int, maxTTL time.Duration) (*Memory, error) {
	if sizeMB <= 0 {
		return nil, fmt.Errorf("memory cache size must be positive, got %d", sizeMB)
	}
	if maxTTL <= 0 {
		maxTTL = time.Second
	}
	cfg := bigcache.DefaultConfig(maxTTL)
	cfg.Shards = 64
	cfg.HardMaxCacheSize = sizeMB
	cfg.MaxEntriesInWindow = 1024
	cfg.MaxEntrySize = 1024
	cfg.CleanWindow = time.Minute
	if maxTTL < time.Minute {
		cfg.CleanWindow = maxTTL
	}
	cfg.Verbose = false
	bc, err := bigcache.New(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("creating memory cache: %w", err)
	}
	return &Memory{bc: bc, now: time.Now}, nil
}

// Get returns the live value for key.
func (m *Memory) Get(_ context.Context, key string) ([]byte, bool, error) {
	b, err := m.bc.Get(key)
	if errors.Is(err, bigcache.ErrEntryNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading memory cache: %w", err)
	}
	v, ok := unwrap(b, m.now())
	return v, ok, nil
}

// Set stores val for ttl.
func (m *Memory) Set(_ context.Context, key string, val []byte, ttl time.Duration) error {
	if err := m.bc.Set(key, wrap(val, ttl, m.now())); err != nil {
		return fmt.Errorf("writing memory cache: %w", err)
	}
	return nil
}

// Close stops bigcache's cleaner.
func (m *Memory) Close() error { return m.bc.Close() }
