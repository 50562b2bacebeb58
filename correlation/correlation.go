package correlation

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sidecall/sidecall/flows"
	"github.com/sidecall/sidecall/internal/httpx"

	"github.com/google/uuid"
	"gopkg.in/yaml.v3"
)

// Priority is Kong's priority for correlation-id.
const Priority = 100001

// SharedKey is the kong.ctx.shared key holding the value.
const SharedKey = "correlation_id"

type correlationConfig struct {
	HeaderName     string `yaml:"header_name"`
	Generator      string `yaml:"generator"`
	EchoDownstream bool   `yaml:"echo_downstream"`
}

// correlationID is Kong's correlation-id plugin.
type correlationID struct {
	header string
	gen    func(x *flows.Exchange) string
	echo   bool
}

// Register adds correlation-id to r.
func Register(r *flows.Registry) {
	r.Register("correlation-id", Priority, newCorrelationID)
}

func newCorrelationID(b *flows.Builder, raw *yaml.Node, at flows.Path) (flows.Plugin, error) {
	c := correlationConfig{HeaderName: "Kong-Request-ID", Generator: "uuid#counter"}
	b.Decode(raw, at, &c)
	if c.HeaderName == "" || !httpx.ValidHeaderName(c.HeaderName) {
		b.Errorf(at.Key("header_name"), "must be a valid header name, got %q", c.HeaderName)
	}
	p := &correlationID{header: strings.ToLower(c.HeaderName), echo: c.EchoDownstream}
	switch c.Generator {
	case "uuid":
		p.gen = func(*flows.Exchange) string { return uuid.NewString() }
	case "uuid#counter":
		p.gen = counterGen()
	case "tracker":
		p.gen = trackerGen()
	default:
		b.Errorf(at.Key("generator"), "must be one of uuid, uuid#counter, tracker, got %q", c.Generator)
	}
	return p, nil
}

// counterGen is Kong's uuid#counter: one UUID per process, then #n with n
// pre-incremented (the first value ends in #1).
func counterGen() func(*flows.Exchange) string {
	base := uuid.NewString() + "#"
	var n atomic.Uint64
	return func(*flows.Exchange) string { return base + strconv.FormatUint(n.Add(1), 10) }
}

// trackerGen is Kong's tracker: server_addr-server_port-pid-connection
// serial-connection requests-epoch seconds. Envoy's connection is identified
// by the client's source.address (ip:port); serials are per process.
func trackerGen() func(*flows.Exchange) string {
	pid := os.Getpid()
	var mu sync.Mutex
	type conn struct{ serial, requests uint64 }
	conns := map[string]*conn{}
	var serial uint64
	return func(x *flows.Exchange) string {
		addr, port := "0.0.0.0", "0"
		if d := x.Attributes["destination.address"]; d != "" {
			if h, p, err := net.SplitHostPort(d); err == nil {
				addr, port = h, p
			}
		}
		src := x.Attributes["source.address"]
		mu.Lock()
		c := conns[src]
		if c == nil || src == "" {
			if len(conns) >= 10000 { // bounded: forget old connections
				conns = map[string]*conn{}
			}
			serial++
			c = &conn{serial: serial}
			if src != "" {
				conns[src] = c
			}
		}
		c.requests++
		cs, cr := c.serial, c.requests
		mu.Unlock()
		now := time.Now()
		return fmt.Sprintf("%s-%s-%d-%d-%d-%d.%03d", addr, port, pid, cs, cr, now.Unix(), now.Nanosecond()/1e6)
	}
}

func (p *correlationID) Name() string       { return "correlation-id" }
func (p *correlationID) Priority() int      { return Priority }
func (p *correlationID) Needs() flows.Needs { return flows.Needs{ResponseHeaders: p.echo} }

func (p *correlationID) Access(_ context.Context, x *flows.Exchange) error {
	v := x.Request.Headers.Get(p.header)
	if v == "" {
		v = p.gen(x)
		x.SetHeader(p.header, v)
	}
	x.Shared[SharedKey] = v
	// One id per request: error bodies' request_id and Kafka's
	// correlation id (kafka-request-reply) are this value too.
	x.SetID(v)
	return nil
}

func (p *correlationID) HeaderFilter(_ context.Context, x *flows.Exchange) error {
	if !p.echo {
		return nil
	}
	v, _ := x.Shared[SharedKey].(string)
	if v == "" {
		v = x.Request.Headers.Get(p.header)
	}
	if v == "" {
		v = p.gen(x)
	}
	x.SetResponseHeader(p.header, v)
	return nil
}
