package cache

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Redis checks: a Redis cache PINGs its server every redisCheckEvery (the
// first right away) and is ready while a PING answered within redisStale.
// A cache never gates readiness (a miss calls through); /readyz reports it
// and sidecall_dependency_up counts it.
const (
	redisCheckEvery = 5 * time.Second
	redisCheckLimit = 2 * time.Second // one PING's time limit
	redisStale      = 12 * time.Second
)

// pinger checks a server in the background until closed.
type pinger struct {
	lastOK atomic.Int64 // unix nanoseconds of the last answer; 0: none

	mu    sync.Mutex
	up    bool
	since time.Time

	ctx  context.Context // canceled by close, which also ends a PING under way
	stop context.CancelFunc
	done chan struct{}
}

func startPinger(ping func(context.Context) error) *pinger {
	p := &pinger{since: time.Now(), done: make(chan struct{})}
	p.ctx, p.stop = context.WithCancel(context.Background())
	go p.run(ping)
	return p
}

func (p *pinger) run(ping func(context.Context) error) {
	defer close(p.done)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(p.ctx, redisCheckLimit)
		if ping(ctx) == nil {
			p.lastOK.Store(time.Now().UnixNano())
		}
		cancel()
		p.state(time.Now())
		t.Reset(redisCheckEvery)
	}
}

// state returns whether the server answered within redisStale of now and
// since when that holds.
func (p *pinger) state(now time.Time) (bool, time.Time) {
	t := p.lastOK.Load()
	up := t != 0 && now.Sub(time.Unix(0, t)) <= redisStale
	p.mu.Lock()
	defer p.mu.Unlock()
	if up != p.up {
		p.up, p.since = up, now
	}
	return up, p.since
}

func (p *pinger) close() {
	p.stop()
	<-p.done
}

// Health reports the cache for /readyz and sidecall_dependency_up: kind
// redis, named host:port (never credentials), never gating.
func (r *Redis) Health() (kind, name string, gates, ready bool, since time.Time) {
	ready, since = r.health.state(time.Now())
	return "redis", r.addr, false, ready, since
}
