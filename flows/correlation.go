package flows

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

	"github.com/google/uuid"
	"gopkg.in/yaml.v3"
)

// CorrelationIDPriority is Kong's priority for correlation-id.
const CorrelationIDPriority = 100001

// SharedCorrelationID is the kong.ctx.shared key holding the value.
const SharedCorrelationID = "correlation_id"

type correlationConfig struct {
	HeaderName     string `yaml:"header_name"`
	Generator      string `yaml:"generator"`
	EchoDownstream bool   `yaml:"echo_downstream"`
}

// correlationID is Kong's correlation-id plugin.
type correlationID struct {
	header string
	gen    func(x *Exchange) string
	echo   bool
}

// RegisterCorrelationID adds correlation-id to r.
func RegisterCorrelationID(r *Registry) {
	r.Register("correlation-id", CorrelationIDPriority, newCorrelationID)
}

func newCorrelationID(b *Builder, raw *yaml.Node, at Path) (Plugin, error) {
	c := correlationConfig{HeaderName: "Kong-Request-ID", Generator: "uuid#counter"}
	b.Decode(raw, at, &c)
	if c.HeaderName == "" || !validHeaderName(c.HeaderName) {
		b.Errorf(at.Key("header_name"), "must be a valid header name, got %q", c.HeaderName)
	}
	p := &correlationID{header: strings.ToLower(c.HeaderName), echo: c.EchoDownstream}
	switch c.Generator {
	case "uuid":
		p.gen = func(*Exchange) string { return uuid.NewString() }
	case "uuid#counter":
		p.gen = counterGen()
	case "tracker":
		p.gen = trackerGen()
	default:
		b.Errorf(at.Key("generator"), "must be one of uuid, uuid#counter, tracker, got %q", c.Generator)
	}
	return p, nil
}

func validHeaderName(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// counterGen is Kong's uuid#counter: one UUID per process, then #n with n
// pre-incremented (the first value ends in #1).
func counterGen() func(*Exchange) string {
	base := uuid.NewString() + "#"
	var n atomic.Uint64
	return func(*Exchange) string { return base + strconv.FormatUint(n.Add(1), 10) }
}

// trackerGen is Kong's tracker: server_addr-server_port-pid-connection
// serial-connection requests-epoch seconds. Envoy's connection is identified
// by the client's source.address (ip:port); serials are per process.
func trackerGen() func(*Exchange) string {
	pid := os.Getpid()
	var mu sync.Mutex
	type conn struct{ serial, requests uint64 }
	conns := map[string]*conn{}
	var serial uint64
	return func(x *Exchange) string {
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

func (p *correlationID) Name() string  { return "correlation-id" }
func (p *correlationID) Priority() int { return CorrelationIDPriority }
func (p *correlationID) Needs() Needs  { return Needs{ResponseHeaders: p.echo} }

func (p *correlationID) Access(_ context.Context, x *Exchange) error {
	v := x.Request.Headers.Get(p.header)
	if v == "" {
		v = p.gen(x)
		x.SetHeader(p.header, v)
	}
	x.Shared[SharedCorrelationID] = v
	return nil
}

func (p *correlationID) HeaderFilter(_ context.Context, x *Exchange) error {
	if !p.echo {
		return nil
	}
	v, _ := x.Shared[SharedCorrelationID].(string)
	if v == "" {
		v = x.Request.Headers.Get(p.header)
	}
	if v == "" {
		v = p.gen(x)
	}
	x.SetResponseHeader(p.header, v)
	return nil
}
