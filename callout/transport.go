package callout

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/sidecall/sidecall/flows"
)

// httpOpts are the transport-level settings of one callout request.
type httpOpts struct {
	sslVerify  bool
	serverName string
	httpProxy  string
	httpsProxy string
	proxyUser  string
	proxyPass  string
	// timeouts; zero means the defaults below.
	connect, read, write time.Duration
}

// defaultSocketTimeout is used for a timeout that is unset or 0 (nginx's
// lua_socket_*_timeout default); the plugin timeout caps it anyway.
const defaultSocketTimeout = 60 * time.Second

func (o httpOpts) key() string {
	return fmt.Sprintf("callout-transport|%t|%s|%s|%s|%s|%s|%d|%d|%d", o.sslVerify, o.serverName,
		o.httpProxy, o.httpsProxy, o.proxyUser, o.proxyPass, o.connect, o.read, o.write)
}

// timeouts are the per-operation socket timeouts of one attempt (see
// watchdog): connect until the connection (and TLS) is up, write for each
// send, read between reads.
func (o httpOpts) timeouts() (connect, read, write time.Duration) {
	def := func(d time.Duration) time.Duration {
		if d <= 0 {
			return defaultSocketTimeout
		}
		return d
	}
	return def(o.connect), def(o.read), def(o.write)
}

// transport is a shared keep-alive pool; Resources closes it.
type transport struct{ *http.Transport }

func (t transport) Close() error { t.CloseIdleConnections(); return nil }

func newTransport(o httpOpts) (*http.Transport, error) {
	connect, _, _ := o.timeouts()
	proxies := map[string]*url.URL{}
	for scheme, raw := range map[string]string{"http": o.httpProxy, "https": o.httpsProxy} {
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("parsing %s proxy: %w", scheme, err)
		}
		if o.proxyUser != "" || o.proxyPass != "" {
			u.User = url.UserPassword(o.proxyUser, o.proxyPass) // Go sends it as Proxy-Authorization
		}
		proxies[scheme] = u
	}
	// The per-attempt watchdog enforces the timeouts; the dial and
	// handshake timeouts only bound a dial the transport finishes in the
	// background after its request gave up.
	d := &net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy: func(r *http.Request) (*url.URL, error) {
			return proxies[r.URL.Scheme], nil
		},
		DialContext: d.DialContext,
		TLSClientConfig: &tls.Config{
			InsecureSkipVerify: !o.sslVerify, //nolint:gosec // Kong's http_opts.ssl_verify (default true)
			ServerName:         o.serverName,
			MinVersion:         tls.VersionTLS12,
		},
		TLSHandshakeTimeout: connect,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}, nil
}

// acquireTransport returns the shared transport for o (Provision only).
func acquireTransport(b *flows.Builder, o httpOpts) (*http.Transport, error) {
	c, err := b.Acquire(o.key(), func() (io.Closer, error) {
		t, err := newTransport(o)
		if err != nil {
			return nil, err
		}
		return transport{t}, nil
	})
	if err != nil {
		return nil, err
	}
	return c.(transport).Transport, nil
}

// maxExtraTransports bounds the pools kept for options request.by_lua sets.
const maxExtraTransports = 32

// transportFor is the transport for a request's options: the callout's
// own, resolved at load, unless request.by_lua changed them; those get a
// transport of the plugin's, closed with its snapshot.
func (p *Plugin) transportFor(c *callout, o httpOpts) (*http.Transport, error) {
	if o == c.opts && c.tr != nil {
		return c.tr, nil
	}
	p.extraMu.Lock()
	defer p.extraMu.Unlock()
	if t, ok := p.extra[o]; ok {
		return t, nil
	}
	t, err := newTransport(o)
	if err != nil {
		return nil, err
	}
	if len(p.extra) >= maxExtraTransports {
		// Options vary per request: keep no pool that could grow without
		// bound; this transport holds no idle connection after the call.
		t.DisableKeepAlives = true
		return t, nil
	}
	if p.extra == nil {
		p.extra = map[httpOpts]*http.Transport{}
	}
	p.extra[o] = t
	return t, nil
}

// closeExtra closes the transports made for options set by request.by_lua.
func (p *Plugin) closeExtra() {
	p.extraMu.Lock()
	defer p.extraMu.Unlock()
	for o, t := range p.extra {
		t.CloseIdleConnections()
		delete(p.extra, o)
	}
}
