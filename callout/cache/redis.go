package cache

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions are Kong's standard Redis fields sidecall supports
// (standalone Redis; milliseconds for timeouts).
type RedisOptions struct {
	Host           string
	Port           int
	Database       int
	Username       string
	Password       string
	SSL            bool
	SSLVerify      bool
	ServerName     string
	ConnectTimeout time.Duration
	ReadTimeout    time.Duration
	WriteTimeout   time.Duration
	PoolSize       int
}

// Redis is a cache shared by every replica using the same Redis.
type Redis struct {
	c      *redis.Client
	prefix string
	addr   string  // host:port, for Health
	health *pinger // background PINGs, for Health (health.go)
}

// NewRedis returns a Redis cache. Requests never wait on a connection
// being made; a background PING every few seconds tells Health whether the
// server answers.
func NewRedis(o RedisOptions, prefix string) *Redis {
	ro := &redis.Options{
		Addr:         net.JoinHostPort(o.Host, strconv.Itoa(o.Port)),
		DB:           o.Database,
		Username:     o.Username,
		Password:     o.Password,
		DialTimeout:  o.ConnectTimeout,
		ReadTimeout:  o.ReadTimeout,
		WriteTimeout: o.WriteTimeout,
		PoolSize:     o.PoolSize,
		MaxRetries:   -1, // a down Redis must not slow requests: one try, then call through
	}
	if o.SSL {
		ro.TLSConfig = &tls.Config{InsecureSkipVerify: !o.SSLVerify, ServerName: o.ServerName, MinVersion: tls.VersionTLS12} //nolint:gosec // Kong's ssl_verify
	}
	r := &Redis{c: redis.NewClient(ro), prefix: prefix, addr: ro.Addr}
	r.health = startPinger(func(ctx context.Context) error { return r.c.Ping(ctx).Err() })
	return r
}

// Get reads key.
func (r *Redis) Get(ctx context.Context, key string) ([]byte, bool, error) {
	b, err := r.c.Get(ctx, r.prefix+key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading redis cache: %w", err)
	}
	v, ok := unwrap(b, time.Now())
	return v, ok, nil
}

// Set writes key with ttl (Redis expires it too).
func (r *Redis) Set(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	if err := r.c.Set(ctx, r.prefix+key, wrap(val, ttl, time.Now()), ttl).Err(); err != nil {
		return fmt.Errorf("writing redis cache: %w", err)
	}
	return nil
}

// Close stops the PINGs and closes the connection pool.
func (r *Redis) Close() error {
	r.health.close()
	return r.c.Close()
}
