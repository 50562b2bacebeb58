package lua

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"fmt"
	"hash/crc32"
	"mime"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	glua "github.com/yuin/gopher-lua"
)

// HostInfo is optional: a Host implementing it answers kong.router,
// kong.request.get_uri_captures and kong.response.get_source.
type HostInfo interface {
	// Route and Service are the matched route and its service as Kong's
	// entities (id, name, ...), nil when there is none.
	Route() map[string]any
	Service() map[string]any
	URICaptures() (named map[string]string, positional []string)
	// ResponseSource is "exit" when a plugin answered, else "service".
	ResponseSource() string
}

var (
	nodeID       = newNodeID()
	nodeHostname = func() string { h, _ := os.Hostname(); return h }()
)

func newNodeID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// authority is the request's host header: Envoy sends it as :authority,
// which the Host keeps apart from the headers.
func (s *state) authority(h Host) string {
	if vs := h.Headers()["host"]; len(vs) > 0 {
		return vs[0]
	}
	if a, ok := h.Var("http_host"); ok && a != "" {
		return a
	}
	return h.Host()
}

// reqHeaders are the request headers with host added.
func (s *state) reqHeaders(h Host) map[string][]string {
	hs := h.Headers()
	if _, ok := hs["host"]; ok {
		return hs
	}
	out := make(map[string][]string, len(hs)+1)
	for k, v := range hs {
		out[k] = v
	}
	out["host"] = []string{s.authority(h)}
	return out
}

func firstHeader(h Host, name string) string {
	if vs := h.Headers()[name]; len(vs) > 0 {
		return strings.TrimSpace(vs[0])
	}
	return ""
}

// clientIP is Envoy's source.address, else x-envoy-external-address, else
// the first x-forwarded-for hop.
func (s *state) clientIP(h Host) string {
	if a, ok := h.Var("remote_addr"); ok && a != "" {
		return a
	}
	if a := firstHeader(h, "x-envoy-external-address"); a != "" {
		return a
	}
	return firstHop(h)
}

func firstHop(h Host) string {
	xff := firstHeader(h, "x-forwarded-for")
	first, _, _ := strings.Cut(xff, ",")
	first = strings.TrimSpace(first)
	if host, _, err := net.SplitHostPort(first); err == nil {
		return host
	}
	return first
}

func (s *state) clientPort(h Host) glua.LValue {
	if p, ok := h.Var("remote_port"); ok {
		if n, err := strconv.Atoi(p); err == nil {
			return glua.LNumber(n)
		}
	}
	return glua.LNil
}

func pushStr(L *glua.LState, v string) int {
	if v == "" {
		L.Push(glua.LNil)
	} else {
		L.Push(glua.LString(v))
	}
	return 1
}

func (s *state) moreRequest(req *glua.LTable) {
	L := s.L
	set := func(name string, f glua.LGFunction) { req.RawSetString(name, L.NewFunction(f)) }
	set("get_header", func(L *glua.LState) int {
		h := s.anyPhase(L)
		n := strings.ToLower(headerName(L, 1))
		if n == "host" {
			L.Push(glua.LString(s.authority(h)))
			return 1
		}
		vs := h.Headers()[n]
		if len(vs) == 0 {
			vs = h.Headers()[strings.ReplaceAll(n, "_", "-")]
		}
		if len(vs) == 0 {
			L.Push(glua.LNil)
			return 1
		}
		L.Push(glua.LString(vs[0]))
		return 1
	})
	set("get_headers", func(L *glua.LState) int {
		L.Push(s.headersTable(s.reqHeaders(s.anyPhase(L))))
		return 1
	})
	set("get_forwarded_scheme", func(L *glua.LState) int {
		h := s.anyPhase(L)
		if v := firstHeader(h, "x-forwarded-proto"); v != "" {
			return pushStr(L, strings.ToLower(v))
		}
		return pushStr(L, h.Scheme())
	})
	set("get_forwarded_host", func(L *glua.LState) int {
		h := s.anyPhase(L)
		if v := firstHeader(h, "x-forwarded-host"); v != "" {
			if host, _, err := net.SplitHostPort(v); err == nil {
				v = host
			}
			return pushStr(L, v)
		}
		return pushStr(L, h.Host())
	})
	set("get_forwarded_port", func(L *glua.LState) int {
		h := s.anyPhase(L)
		if n, err := strconv.Atoi(firstHeader(h, "x-forwarded-port")); err == nil {
			L.Push(glua.LNumber(n))
			return 1
		}
		L.Push(glua.LNumber(h.Port()))
		return 1
	})
	set("get_forwarded_path", func(L *glua.LState) int {
		h := s.anyPhase(L)
		if v := firstHeader(h, "x-forwarded-path"); v != "" {
			return pushStr(L, v)
		}
		return pushStr(L, h.Path())
	})
	set("get_forwarded_prefix", func(L *glua.LState) int { return pushStr(L, firstHeader(s.anyPhase(L), "x-forwarded-prefix")) })
	set("get_http_version", func(L *glua.LState) int { s.anyPhase(L); L.Push(glua.LNumber(1.1)); return 1 })
	set("get_raw_path", func(L *glua.LState) int { L.Push(glua.LString(s.anyPhase(L).Path())); return 1 })
	set("get_start_time", func(L *glua.LState) int {
		s.anyPhase(L)
		L.Push(glua.LNumber(s.start.UnixMilli()))
		return 1
	})
	set("get_uri_captures", func(L *glua.LState) int {
		h := s.anyPhase(L)
		named, pos := map[string]string(nil), []string(nil)
		if hi, ok := h.(HostInfo); ok {
			named, pos = hi.URICaptures()
		}
		out := L.NewTable()
		un := L.CreateTable(len(pos), 0)
		for i, c := range pos {
			un.RawSetInt(i+1, glua.LString(c))
		}
		nm := L.CreateTable(0, len(named))
		for k, c := range named {
			nm.RawSetString(k, glua.LString(c))
		}
		out.RawSetString("unnamed", un)
		out.RawSetString("named", nm)
		L.Push(out)
		return 1
	})
}

func (s *state) clientTable() *glua.LTable {
	return fns(s.L, map[string]glua.LGFunction{
		"get_ip": func(L *glua.LState) int { return pushStr(L, s.clientIP(s.anyPhase(L))) },
		"get_forwarded_ip": func(L *glua.LState) int {
			h := s.anyPhase(L)
			if v := firstHop(h); v != "" {
				return pushStr(L, v)
			}
			return pushStr(L, s.clientIP(h))
		},
		"get_port": func(L *glua.LState) int { L.Push(s.clientPort(s.anyPhase(L))); return 1 },
		"get_forwarded_port": func(L *glua.LState) int {
			h := s.anyPhase(L)
			if n, err := strconv.Atoi(firstHeader(h, "x-forwarded-port")); err == nil {
				L.Push(glua.LNumber(n))
				return 1
			}
			L.Push(s.clientPort(h))
			return 1
		},
		"get_protocol": func(L *glua.LState) int {
			h := s.anyPhase(L)
			p := h.Scheme()
			if strings.HasPrefix(firstHeader(h, "content-type"), "application/grpc") {
				p = "grpc"
				if h.Scheme() == "https" {
					p = "grpcs"
				}
			}
			return pushStr(L, p)
		},
		"get_consumer":   func(L *glua.LState) int { s.anyPhase(L); L.Push(glua.LNil); return 1 },
		"get_credential": func(L *glua.LState) int { s.anyPhase(L); L.Push(glua.LNil); return 1 },
	})
}

func (s *state) routerTable() *glua.LTable {
	get := func(f func(HostInfo) map[string]any) glua.LGFunction {
		return func(L *glua.LState) int {
			if hi, ok := s.anyPhase(L).(HostInfo); ok {
				if m := f(hi); m != nil {
					L.Push(s.toLuaCopy(m, 0))
					return 1
				}
			}
			L.Push(glua.LNil)
			return 1
		}
	}
	return fns(s.L, map[string]glua.LGFunction{
		"get_route":   get(HostInfo.Route),
		"get_service": get(HostInfo.Service),
	})
}

func (s *state) nodeTable() *glua.LTable {
	return fns(s.L, map[string]glua.LGFunction{
		"get_id":       func(L *glua.LState) int { L.Push(glua.LString(nodeID)); return 1 },
		"get_hostname": func(L *glua.LState) int { L.Push(glua.LString(nodeHostname)); return 1 },
	})
}

func (s *state) kongTableLib() *glua.LTable {
	return fns(s.L, map[string]glua.LGFunction{
		"new": func(L *glua.LState) int {
			narr, nrec := min(max(L.OptInt(1, 0), 0), 1<<16), min(max(L.OptInt(2, 0), 0), 1<<16)
			s.afford(L, narr+nrec)
			L.Push(L.CreateTable(narr, nrec))
			return 1
		},
		"clear": func(L *glua.LState) int {
			t := L.CheckTable(1)
			if _, ok := s.sealed[t]; ok {
				L.RaiseError("attempt to modify a read-only table")
			}
			if p := s.proxies[t]; p != nil {
				L.RaiseError("kong.table.clear: cannot clear a kong.ctx.shared view")
			}
			var keys []glua.LValue
			t.ForEach(func(k, _ glua.LValue) { keys = append(keys, k) })
			for _, k := range keys {
				t.RawSet(k, glua.LNil)
			}
			return 0
		},
	})
}

// hiddenMap is a request-scoped map kept in Shared under a hidden key
// (ngx.ctx, kong.ctx.plugin): it lives as long as the request, across
// phases and pooled states.
func (s *state) hiddenMap(key string) glua.LValue {
	if s.host == nil {
		return glua.LNil
	}
	sh := s.host.Shared()
	if sh == nil {
		return glua.LNil
	}
	m, ok := sh[key].(map[string]any)
	if !ok {
		m = map[string]any{}
		sh[key] = m
	}
	return s.liveMap(m)
}

// pluginScope is the config path of the plugin the running chunk belongs
// to (the chunk name up to ".config").
func (s *state) pluginScope() string {
	if s.chunk == nil {
		return ""
	}
	n := s.chunk.name
	if i := strings.Index(n, ".config"); i >= 0 {
		return n[:i]
	}
	return n
}

func (s *state) moreResponse(resp *glua.LTable) {
	L := s.L
	resp.RawSetString("get_source", L.NewFunction(func(L *glua.LState) int {
		h := s.check(L, phasesRespRead)
		src := "service"
		if hi, ok := h.(HostInfo); ok {
			src = hi.ResponseSource()
		}
		L.Push(glua.LString(src))
		return 1
	}))
	resp.RawSetString("set_headers", L.NewFunction(func(L *glua.LState) int {
		h := s.check(L, phasesRespWrite)
		t := L.CheckTable(1)
		t.ForEach(func(k, v glua.LValue) {
			ks, ok := k.(glua.LString)
			if !ok {
				L.RaiseError("invalid header name: got %s, expected string", k.Type())
			}
			L.Push(k)
			L.Push(v)
			vs := headerValues(L, L.GetTop())
			L.Pop(2)
			h.ClearResponseHeader(string(ks))
			for _, e := range vs {
				h.AddResponseHeader(string(ks), e)
			}
		})
		return 0
	}))
	resp.RawSetString("error", L.NewFunction(func(L *glua.LState) int {
		h := s.check(L, phasesExit)
		status := L.CheckInt(1)
		if status < 400 || status > 599 {
			L.RaiseError("code must be an integer between 400 and 599")
		}
		hdrs := s.exitHeaders(L, 3)
		var body any
		switch m := L.Get(2).(type) {
		case *glua.LNilType:
			body = map[string]any{"message": errorMessage(status)}
		case glua.LString:
			body = map[string]any{"message": string(m)}
		case *glua.LTable:
			body = s.toGo(m, 0)
		default:
			L.RaiseError("message must be a nil, string or table")
		}
		b, err := marshalJSON(body)
		if err != nil {
			L.RaiseError("encoding body: %s", err.Error())
		}
		if _, ok := hdrs["content-type"]; !ok {
			hdrs["content-type"] = []string{"application/json; charset=utf-8"}
		}
		s.finishExit(L, h, status, b, hdrs)
		return 0
	}))
}

// errorMessage is Kong's default message of kong.response.error.
func errorMessage(status int) string {
	switch status {
	case 400:
		return "Bad request"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "Not found"
	case 405:
		return "Method not allowed"
	case 500:
		return "An unexpected error occurred"
	case 502:
		return "An invalid response was received from the upstream server"
	case 503:
		return "The upstream server is currently unavailable"
	case 504:
		return "The upstream server is timing out"
	}
	if t := http.StatusText(status); t != "" {
		return t
	}
	return "The upstream server responded with " + strconv.Itoa(status)
}

// respGetters adds to m the response readers kong.response and
// kong.service.response share: get_status, get_header, get_headers.
func (s *state) respGetters(m map[string]glua.LGFunction) map[string]glua.LGFunction {
	m["get_status"] = func(L *glua.LState) int { L.Push(glua.LNumber(s.check(L, phasesRespRead).Status())); return 1 }
	m["get_header"] = func(L *glua.LState) int {
		vs := s.check(L, phasesRespRead).ResponseHeaders()[strings.ToLower(headerName(L, 1))]
		if len(vs) == 0 {
			L.Push(glua.LNil)
			return 1
		}
		L.Push(glua.LString(vs[0]))
		return 1
	}
	m["get_headers"] = func(L *glua.LState) int {
		L.Push(s.headersTable(s.check(L, phasesRespRead).ResponseHeaders()))
		return 1
	}
	return m
}

func (s *state) serviceResponse() *glua.LTable {
	L := s.L
	t := fns(L, s.respGetters(map[string]glua.LGFunction{
		"get_raw_body": func(L *glua.LState) int {
			b, ok := s.check(L, phasesRespRead).ResponseBody()
			if !ok {
				L.Push(glua.LNil)
				return 1
			}
			L.Push(glua.LString(b))
			return 1
		},
		"get_body": func(L *glua.LState) int {
			h := s.check(L, phasesRespRead)
			b, ok := h.ResponseBody()
			if !ok {
				L.Push(glua.LNil)
				L.Push(glua.LString("response body not buffered"))
				return 2
			}
			ct := L.OptString(1, "")
			if ct == "" {
				if vs := h.ResponseHeaders()["content-type"]; len(vs) > 0 {
					ct = vs[0]
				}
			}
			mt, _, _ := mime.ParseMediaType(ct)
			switch {
			case mt == "application/json" || strings.HasSuffix(mt, "+json"):
				v, err := s.decodeJSON(b)
				if err != nil {
					L.Push(glua.LNil)
					L.Push(glua.LString("invalid json body"))
					return 2
				}
				L.Push(v)
			case mt == "application/x-www-form-urlencoded":
				L.Push(s.toLuaCopy(ParseQuery(string(b)), 0))
			default:
				L.Push(glua.LNil)
				L.Push(glua.LString("unsupported content type '" + mt + "'"))
				return 2
			}
			L.Push(glua.LNil)
			L.Push(glua.LString(mt))
			return 3
		},
	}))
	s.meter(t, "get_raw_body", "get_body", "get_headers")
	return t
}

// processCache is kong.cache: one per process, shared by every sandbox.
var processCache = &ttlCache{m: map[string]cacheEntry{}}

const maxCacheEntries = 10000

type cacheEntry struct {
	v   any
	exp time.Time // zero: no expiry
}

type ttlCache struct {
	mu sync.Mutex
	m  map[string]cacheEntry
}

func (c *ttlCache) get(k string) (cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if ok && !e.exp.IsZero() && time.Now().After(e.exp) {
		delete(c.m, k)
		return e, false
	}
	return e, ok
}

func (c *ttlCache) set(k string, v any, ttl float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxCacheEntries {
		now := time.Now()
		for key, e := range c.m {
			if !e.exp.IsZero() && now.After(e.exp) {
				delete(c.m, key)
			}
		}
		if len(c.m) >= maxCacheEntries {
			for key := range c.m { // evict an arbitrary entry
				delete(c.m, key)
				break
			}
		}
	}
	e := cacheEntry{v: v}
	if ttl > 0 {
		e.exp = time.Now().Add(time.Duration(ttl * float64(time.Second)))
	}
	c.m[k] = e
}

func (c *ttlCache) del(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
}

func (s *state) cacheTable() *glua.LTable {
	L := s.L
	// self drops the table of a method call (kong.cache:get).
	self := func(L *glua.LState) {
		if t, ok := L.Get(1).(*glua.LTable); ok && t == s.cacheView {
			L.Remove(1)
		}
	}
	return fns(L, map[string]glua.LGFunction{
		"get": func(L *glua.LState) int {
			s.anyPhase(L)
			self(L)
			key := L.CheckString(1)
			if e, ok := processCache.get(key); ok {
				L.Push(s.toLuaCopy(e.v, 0))
				L.Push(glua.LNil)
				L.Push(glua.LNumber(1))
				return 3
			}
			ttl := 0.0
			if opts, ok := L.Get(2).(*glua.LTable); ok {
				if n, ok := opts.RawGetString("ttl").(glua.LNumber); ok {
					ttl = float64(n)
				}
			}
			cb := L.CheckFunction(3)
			nargs := L.GetTop() - 3
			base := L.GetTop()
			L.Push(cb)
			for i := 4; i <= base; i++ {
				L.Push(L.Get(i))
			}
			err := L.PCall(nargs, 3, s.keepErr)
			if s.exited || (s.ctx != nil && s.ctx.Err() != nil) {
				L.RaiseError("%s", "stopped")
			}
			if err != nil {
				L.Push(glua.LNil)
				L.Push(glua.LString("callback threw an error: " + errValue(err).String()))
				return 2
			}
			v, cerr, cttl := L.Get(-3), L.Get(-2), L.Get(-1)
			L.Pop(3)
			if v == glua.LNil {
				L.Push(glua.LNil)
				L.Push(cerr)
				return 2
			}
			if n, ok := cttl.(glua.LNumber); ok {
				ttl = float64(n)
			}
			gv, gerr := s.toGoErr(v, 0)
			if gerr != nil {
				L.Push(glua.LNil)
				L.Push(glua.LString("cannot cache value: " + gerr.Error()))
				return 2
			}
			if ttl >= 0 {
				processCache.set(key, gv, ttl)
			}
			L.Push(v)
			L.Push(glua.LNil)
			L.Push(glua.LNumber(3))
			return 3
		},
		"probe": func(L *glua.LState) int {
			s.anyPhase(L)
			self(L)
			e, ok := processCache.get(L.CheckString(1))
			if !ok {
				L.Push(glua.LNil)
				return 1
			}
			ttl := 0.0
			if !e.exp.IsZero() {
				ttl = time.Until(e.exp).Seconds()
			}
			L.Push(glua.LNumber(ttl))
			L.Push(glua.LNil)
			L.Push(s.toLuaCopy(e.v, 0))
			return 3
		},
		"invalidate": func(L *glua.LState) int {
			s.anyPhase(L)
			self(L)
			processCache.del(L.CheckString(1))
			return 0
		},
	})
}

// hmacSHA1 is ngx.hmac_sha1 (binary digest).
func hmacSHA1(key, data string) string {
	m := hmac.New(sha1.New, []byte(key))
	m.Write([]byte(data))
	return string(m.Sum(nil))
}

func crc32String(s string) uint32 { return crc32.ChecksumIEEE([]byte(s)) }

// serializeKey holds kong.log.set_serialize_value's values for the
// request (in Shared, so a log phase chunk sees them).
const serializeKey = "\x00kong.log.serialize"

func (s *state) setSerializeValue(L *glua.LState) int {
	h := s.anyPhase(L)
	key := L.CheckString(1)
	v, err := s.toGoErr(L.Get(2), 0)
	if err != nil {
		L.RaiseError("value must be a JSON-like value: %s", err.Error())
	}
	sh := h.Shared()
	if sh == nil {
		return 0
	}
	m, ok := sh[serializeKey].(map[string]any)
	if !ok {
		m = map[string]any{}
		sh[serializeKey] = m
	}
	m[key] = v
	return 0
}

// serialize is kong.log.serialize: Kong's log record, the fields sidecall
// knows, with set_serialize_value's changes applied.
func (s *state) serialize(L *glua.LState) int {
	h := s.check(L, []string{"log"})
	query := ParseQuery(h.RawQuery())
	url := h.Scheme() + "://" + s.authority(h) + h.Path()
	if q := h.RawQuery(); q != "" {
		url += "?" + q
	}
	uri := h.Path()
	if q := h.RawQuery(); q != "" {
		uri += "?" + q
	}
	hdrs := func(m map[string][]string) map[string]any {
		out := make(map[string]any, len(m))
		for k := range m {
			out[k] = HeaderValue(m, k)
		}
		return out
	}
	reqH := hdrs(s.reqHeaders(h))
	if _, ok := reqH["authorization"]; ok {
		reqH["authorization"] = "REDACTED" // as Kong
	}
	rec := map[string]any{
		"request":    map[string]any{"method": h.Method(), "uri": uri, "url": url, "querystring": query, "headers": reqH},
		"response":   map[string]any{"status": int64(h.Status()), "headers": hdrs(h.ResponseHeaders())},
		"client_ip":  s.clientIP(h),
		"started_at": s.start.UnixMilli(),
	}
	if hi, ok := h.(HostInfo); ok {
		if r := hi.Route(); r != nil {
			rec["route"] = r
		}
		if sv := hi.Service(); sv != nil {
			rec["service"] = sv
		}
	}
	if m, ok := h.Shared()[serializeKey].(map[string]any); ok {
		for k, v := range m {
			setPath(rec, strings.Split(k, "."), v)
		}
	}
	L.Push(s.toLuaCopy(rec, 0))
	return 1
}

func setPath(m map[string]any, keys []string, v any) {
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	if v == nil {
		delete(m, keys[len(keys)-1])
		return
	}
	m[keys[len(keys)-1]] = v
}
