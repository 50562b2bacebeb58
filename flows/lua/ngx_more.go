package lua

import (
	"mime"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	glua "github.com/yuin/gopher-lua"
)

// ngx method constants (ngx.HTTP_GET, ...), for ngx.req.set_method.
var ngxMethods = map[string]int{"GET": 2, "HEAD": 4, "POST": 8, "PUT": 16, "DELETE": 32, "MKCOL": 64, "COPY": 128, "MOVE": 256,
	"OPTIONS": 512, "PROPFIND": 1024, "PROPPATCH": 2048, "LOCK": 4096, "UNLOCK": 8192, "PATCH": 16384, "TRACE": 32768}

var ngxConsts = map[string]int{"OK": 0, "ERROR": -1, "AGAIN": -2, "DONE": -4, "DECLINED": -5,
	"HTTP_CONTINUE": 100, "HTTP_SWITCHING_PROTOCOLS": 101, "HTTP_ACCEPTED": 202, "HTTP_PARTIAL_CONTENT": 206,
	"HTTP_SPECIAL_RESPONSE": 300, "HTTP_MOVED_PERMANENTLY": 301, "HTTP_MOVED_TEMPORARILY": 302, "HTTP_SEE_OTHER": 303,
	"HTTP_NOT_MODIFIED": 304, "HTTP_TEMPORARY_REDIRECT": 307, "HTTP_PERMANENT_REDIRECT": 308, "HTTP_PAYMENT_REQUIRED": 402,
	"HTTP_NOT_ALLOWED": 405, "HTTP_NOT_ACCEPTABLE": 406, "HTTP_REQUEST_TIMEOUT": 408, "HTTP_CONFLICT": 409, "HTTP_GONE": 410,
	"HTTP_UPGRADE_REQUIRED": 426, "HTTP_TOO_MANY_REQUESTS": 429, "HTTP_CLOSE": 444, "HTTP_ILLEGAL": 451,
	"HTTP_METHOD_NOT_IMPLEMENTED": 501, "HTTP_VERSION_NOT_SUPPORTED": 505, "HTTP_INSUFFICIENT_STORAGE": 507}

func (s *state) moreNgx(ngx *glua.LTable) {
	L := s.L
	for k, v := range ngxConsts {
		ngx.RawSetString(k, glua.LNumber(v))
	}
	for k, v := range ngxMethods {
		ngx.RawSetString("HTTP_"+k, glua.LNumber(v))
	}
	now := func() time.Time { return time.Now() }
	add := map[string]glua.LGFunction{
		"hmac_sha1": func(L *glua.LState) int {
			L.Push(glua.LString(hmacSHA1(L.CheckString(1), L.CheckString(2))))
			return 1
		},
		"crc32_short": func(L *glua.LState) int { L.Push(glua.LNumber(crc32String(L.CheckString(1)))); return 1 },
		"crc32_long":  func(L *glua.LState) int { L.Push(glua.LNumber(crc32String(L.CheckString(1)))); return 1 },
		"today":       func(L *glua.LState) int { L.Push(glua.LString(now().Format("2006-01-02"))); return 1 },
		"localtime":   func(L *glua.LState) int { L.Push(glua.LString(now().Format("2006-01-02 15:04:05"))); return 1 },
		"utctime":     func(L *glua.LState) int { L.Push(glua.LString(now().UTC().Format("2006-01-02 15:04:05"))); return 1 },
		"http_time": func(L *glua.LState) int {
			L.Push(glua.LString(time.Unix(int64(L.CheckNumber(1)), 0).UTC().Format(http.TimeFormat)))
			return 1
		},
		"cookie_time": func(L *glua.LState) int {
			L.Push(glua.LString(time.Unix(int64(L.CheckNumber(1)), 0).UTC().Format("Mon, 02-Jan-06 15:04:05 GMT")))
			return 1
		},
		"update_time": func(L *glua.LState) int { return 0 },
		"encode_args": func(L *glua.LState) int {
			m, _ := s.toGo(L.CheckTable(1), 0).(map[string]any)
			L.Push(glua.LString(EncodeQuery(m)))
			return 1
		},
		"decode_args": func(L *glua.LState) int {
			L.Push(s.toLuaCopy(ParseQuery(L.CheckString(1)), 0))
			return 1
		},
		"get_phase": func(L *glua.LState) int {
			p := "init"
			if s.host != nil {
				p = s.host.Phase()
			}
			L.Push(glua.LString(p))
			return 1
		},
		"say":   func(L *glua.LState) int { return s.ngxPrint(L, true) },
		"print": func(L *glua.LState) int { return s.ngxPrint(L, false) },
		"exit":  s.ngxExit,
		"redirect": func(L *glua.LState) int {
			h := s.check(L, phasesRewriteAccess)
			uri := L.CheckString(1)
			status := L.OptInt(2, 302)
			switch status {
			case 301, 302, 303, 307, 308:
			default:
				L.RaiseError("only ngx.HTTP_MOVED_TEMPORARILY, ngx.HTTP_MOVED_PERMANENTLY, ngx.HTTP_PERMANENT_REDIRECT, ngx.HTTP_SEE_OTHER, and ngx.HTTP_TEMPORARY_REDIRECT are allowed")
			}
			s.finishExit(L, h, status, nil, map[string][]string{"location": {uri}})
			return 0
		},
	}
	for k, f := range add {
		ngx.RawSetString(k, L.NewFunction(f))
	}
	s.meter(ngx, "encode_args", "decode_args")
	ngx.RawSetString("re", s.readOnly(s.reTable()))
	ngx.RawSetString("req", s.readOnly(s.ngxReq()))
	ngx.RawSetString("worker", s.readOnly(fns(L, map[string]glua.LGFunction{
		"pid":   func(L *glua.LState) int { L.Push(glua.LNumber(os.Getpid())); return 1 },
		"id":    func(L *glua.LState) int { L.Push(glua.LNumber(0)); return 1 },
		"count": func(L *glua.LState) int { L.Push(glua.LNumber(1)); return 1 },
	})))
	ngx.RawSetString("resp", s.readOnly(fns(L, map[string]glua.LGFunction{
		"get_headers": s.metered(func(L *glua.LState) int {
			L.Push(s.headersTable(s.anyPhase(L).ResponseHeaders()))
			return 1
		}),
	})))
	cfg := L.NewTable()
	cfg.RawSetString("subsystem", glua.LString("http"))
	cfg.RawSetString("debug", glua.LFalse)
	cfg.RawSetString("is_console", glua.LFalse)
	cfg.RawSetString("nginx_version", glua.LNumber(1025003))
	cfg.RawSetString("ngx_lua_version", glua.LNumber(10026))
	ngx.RawSetString("config", s.readOnly(cfg))
	ngx.RawSetString("var", s.ngxVar())
	ngx.RawSetString("header", s.ngxHeader())
	ngx.RawSetString("arg", s.ngxArg())
}

// ngxView is the read-only ngx with ngx.status and ngx.ctx, which are
// per request.
func (s *state) ngxView(t *glua.LTable) *glua.LTable {
	L := s.L
	p := s.seal(L.NewTable())
	p.Metatable = s.protectedMT(map[string]glua.LValue{
		"__index": L.NewFunction(func(L *glua.LState) int {
			k := L.Get(2)
			switch k.String() {
			case "status":
				if s.host == nil {
					L.Push(glua.LNumber(0))
					return 1
				}
				if p := s.host.Phase(); p == "rewrite" || p == "access" {
					L.Push(glua.LNumber(s.ngxStatus))
				} else {
					L.Push(glua.LNumber(s.host.Status()))
				}
				return 1
			case "ctx":
				L.Push(s.hiddenMap("\x00ngx.ctx"))
				return 1
			}
			L.Push(t.RawGet(k))
			return 1
		}),
		"__newindex": L.NewFunction(func(L *glua.LState) int {
			if L.Get(2).String() != "status" {
				return refuseWrite(L)
			}
			h := s.anyPhase(L)
			code := L.CheckInt(3)
			switch h.Phase() {
			case "rewrite", "access":
				s.ngxStatus = code
			case "header_filter":
				h.SetStatus(code)
			default:
				L.RaiseError("attempt to set ngx.status after sending out response headers")
			}
			return 0
		}),
		"__pairs": L.NewFunction(func(L *glua.LState) int { return s.pushSortedIter(L, t) }),
	})
	return p
}

func (s *state) ngxPrint(L *glua.LState, nl bool) int {
	s.check(L, phasesRewriteAccess)
	n := len(s.say)
	var add func(v glua.LValue)
	add = func(v glua.LValue) {
		switch t := v.(type) {
		case *glua.LTable:
			for i := 1; i <= t.Len(); i++ {
				add(t.RawGetInt(i))
			}
		case *glua.LNilType:
			s.say = append(s.say, "nil"...)
		case *glua.LUserData:
			if t == s.null {
				s.say = append(s.say, "null"...)
				return
			}
			s.say = append(s.say, L.ToStringMeta(t).String()...)
		default:
			s.say = append(s.say, L.ToStringMeta(t).String()...)
		}
		if len(s.say) > s.sb.opts.MaxStringLen {
			L.RaiseError("ngx.say: output too large (limit %d bytes)", s.sb.opts.MaxStringLen)
		}
	}
	for i := 1; i <= L.GetTop(); i++ {
		add(L.Get(i))
	}
	if nl {
		s.say = append(s.say, '\n')
	}
	s.said = true
	s.chargeBytes(len(s.say) - n)
	L.Push(glua.LNumber(1))
	return 1
}

// sayReply answers with what ngx.say/print buffered (status: ngx.status,
// else 200).
func (s *state) sayReply(h Host, status int) {
	if status == 0 {
		status = s.ngxStatus
	}
	if status == 0 {
		status = 200
	}
	hdrs := map[string][]string{}
	if !s.ngxCT {
		hdrs["content-type"] = []string{"text/plain"}
	}
	h.Exit(status, s.say, hdrs)
	s.say, s.said = nil, false
}

func (s *state) ngxExit(L *glua.LState) int {
	h := s.anyPhase(L)
	code := L.CheckInt(1)
	switch h.Phase() {
	case "rewrite", "access":
		switch {
		case s.said:
			// nginx sent the headers at the first ngx.say: ngx.status (or
			// 200) stands, whatever the exit code.
			s.sayReply(h, 0)
		case code >= 200:
			var body []byte
			hdrs := map[string][]string{}
			if code >= 400 {
				body, _ = marshalJSON(map[string]any{"message": errorMessage(code)})
				if !s.ngxCT {
					hdrs["content-type"] = []string{"application/json; charset=utf-8"}
				}
			}
			h.Exit(code, body, hdrs)
		}
	case "header_filter":
		if code >= 200 {
			h.SetStatus(code)
		}
	}
	// Ends the chunk; with no reply the request goes on.
	s.exited = true
	L.Error(s.exitVal, 0)
	return 0
}

func (s *state) ngxVar() *glua.LTable {
	L := s.L
	v := s.seal(L.NewTable())
	v.Metatable = s.protectedMT(map[string]glua.LValue{
		"__index": L.NewFunction(func(L *glua.LState) int {
			name := L.CheckString(2)
			if s.host == nil {
				L.Push(glua.LNil)
				return 1
			}
			h := s.host
			switch {
			case name == "remote_addr" || name == "realip_remote_addr":
				return pushStr(L, s.clientIP(h))
			case name == "http_host":
				return pushStr(L, s.authority(h))
			case strings.HasPrefix(name, "cookie_"):
				r := http.Request{Header: http.Header{"Cookie": h.Headers()["cookie"]}}
				c, err := r.Cookie(name[len("cookie_"):])
				if err != nil {
					L.Push(glua.LNil)
					return 1
				}
				L.Push(glua.LString(c.Value))
				return 1
			case name == "upstream_uri":
				p := h.Path()
				if q := h.RawQuery(); q != "" {
					p += "?" + q
				}
				L.Push(glua.LString(p))
				return 1
			case name == "upstream_host":
				return pushStr(L, s.authority(h))
			case name == "request_body":
				if b, ok := h.Body(); ok && h.Phase() != "log" {
					L.Push(glua.LString(b))
					return 1
				}
				L.Push(glua.LNil)
				return 1
			case name == "upstream_status":
				if p := h.Phase(); p == "rewrite" || p == "access" || h.Status() == 0 {
					L.Push(glua.LNil)
					return 1
				}
				L.Push(glua.LString(strconv.Itoa(h.Status())))
				return 1
			case name == "request_time":
				L.Push(glua.LNumber(time.Since(s.start).Seconds()))
				return 1
			case name == "msec":
				L.Push(glua.LNumber(float64(time.Now().UnixMilli()) / 1000))
				return 1
			}
			if val, ok := h.Var(name); ok {
				L.Push(glua.LString(val))
				return 1
			}
			L.Push(glua.LNil)
			return 1
		}),
		"__newindex": L.NewFunction(func(L *glua.LState) int {
			name := L.CheckString(2)
			val := ""
			if L.Get(3) != glua.LNil {
				val = argString(L, 3, "ngx.var."+name)
			}
			h := s.check(L, phasesRewriteAccess)
			switch name {
			case "args", "query_string":
				h.SetRawQuery(val)
			case "upstream_uri", "request_uri":
				if !strings.HasPrefix(val, "/") {
					L.RaiseError("ngx.var.%s must start with /", name)
				}
				// Without a '?' the query stays (Kong adds the request's
				// args to upstream_uri when it proxies).
				p, q, hasQ := strings.Cut(val, "?")
				h.SetPath(p)
				if hasQ {
					h.SetRawQuery(q)
				}
			case "upstream_host":
				h.SetHeader("host", val)
			case "upstream_x_forwarded_for", "upstream_x_forwarded_proto", "upstream_x_forwarded_host",
				"upstream_x_forwarded_port", "upstream_x_forwarded_path", "upstream_x_forwarded_prefix":
				// Kong's template sends these as X-Forwarded-*; nginx omits an empty one.
				hdr := "x-" + strings.ReplaceAll(strings.TrimPrefix(name, "upstream_x_"), "_", "-")
				if val == "" {
					h.ClearHeader(hdr)
				} else {
					h.SetHeader(hdr, val)
				}
			default:
				L.RaiseError("ngx.var.%s cannot be written in sidecall (writable: args, upstream_uri, upstream_host, upstream_x_forwarded_*)", name)
			}
			return 0
		}),
	})
	return v
}

func normHeader(n string) string { return strings.ToLower(strings.ReplaceAll(n, "_", "-")) }

func (s *state) ngxHeader() *glua.LTable {
	L := s.L
	t := s.seal(L.NewTable())
	t.Metatable = s.protectedMT(map[string]glua.LValue{
		"__index": L.NewFunction(func(L *glua.LState) int {
			if s.host == nil {
				L.Push(glua.LNil)
				return 1
			}
			vs := s.host.ResponseHeaders()[normHeader(L.CheckString(2))]
			switch len(vs) {
			case 0:
				L.Push(glua.LNil)
			case 1:
				L.Push(glua.LString(vs[0]))
			default:
				l := L.CreateTable(len(vs), 0)
				for i, v := range vs {
					l.RawSetInt(i+1, glua.LString(v))
				}
				L.Push(l)
			}
			return 1
		}),
		"__newindex": L.NewFunction(func(L *glua.LState) int {
			h := s.check(L, phasesRespWrite)
			n := normHeader(L.CheckString(2))
			if n == "content-type" {
				s.ngxCT = true
			}
			h.ClearResponseHeader(n)
			if L.Get(3) == glua.LNil {
				return 0
			}
			for _, v := range headerValues(L, 3) {
				h.AddResponseHeader(n, v)
			}
			return 0
		}),
	})
	return t
}

func (s *state) ngxArg() *glua.LTable {
	L := s.L
	t := s.seal(L.NewTable())
	t.Metatable = s.protectedMT(map[string]glua.LValue{
		"__index": L.NewFunction(func(L *glua.LState) int {
			if s.host == nil || s.host.Phase() != "body_filter" {
				L.Push(glua.LNil)
				return 1
			}
			switch L.Get(2) {
			case glua.LNumber(1):
				b, _ := s.host.ResponseBody()
				s.chargeBytes(len(b))
				L.Push(glua.LString(b))
			case glua.LNumber(2):
				L.Push(glua.LTrue) // the body is whole: this is its last chunk
			default:
				L.Push(glua.LNil)
			}
			return 1
		}),
		"__newindex": L.NewFunction(func(L *glua.LState) int {
			h := s.check(L, phasesBody)
			switch L.Get(2) {
			case glua.LNumber(1):
				var b []byte
				switch v := L.Get(3).(type) {
				case *glua.LNilType:
				case glua.LString:
					b = []byte(v)
				case *glua.LTable:
					var sb strings.Builder
					for i := 1; i <= v.Len(); i++ {
						sb.WriteString(L.ToStringMeta(v.RawGetInt(i)).String())
					}
					b = []byte(sb.String())
				default:
					b = []byte(L.ToStringMeta(v).String())
				}
				h.SetResponseBody(b)
			case glua.LNumber(2):
				// eof: the whole body is sent at once anyway
			default:
				L.RaiseError("ngx.arg: only [1] and [2] can be set")
			}
			return 0
		}),
	})
	return t
}

func (s *state) ngxReq() *glua.LTable {
	L := s.L
	set := func(f func(h Host, L *glua.LState)) glua.LGFunction {
		return func(L *glua.LState) int { f(s.check(L, phasesRewriteAccess), L); return 0 }
	}
	t := fns(L, map[string]glua.LGFunction{
		"get_headers": func(L *glua.LState) int {
			L.Push(s.headersTable(s.reqHeaders(s.anyPhase(L))))
			return 1
		},
		"get_uri_args": func(L *glua.LState) int {
			L.Push(s.toLuaCopy(ParseQuery(s.anyPhase(L).RawQuery()), 0))
			return 1
		},
		"get_post_args": func(L *glua.LState) int {
			h := s.check(L, phasesRequestBody)
			b, ok := h.Body()
			if !ok {
				L.Push(glua.LNil)
				L.Push(glua.LString("request body not buffered"))
				return 2
			}
			mt, _, _ := mime.ParseMediaType(firstHeader(h, "content-type"))
			if mt != "application/x-www-form-urlencoded" {
				L.Push(L.NewTable())
				return 1
			}
			L.Push(s.toLuaCopy(ParseQuery(string(b)), 0))
			return 1
		},
		"get_method":   func(L *glua.LState) int { L.Push(glua.LString(s.anyPhase(L).Method())); return 1 },
		"http_version": func(L *glua.LState) int { s.anyPhase(L); L.Push(glua.LNumber(1.1)); return 1 },
		"start_time": func(L *glua.LState) int {
			s.anyPhase(L)
			L.Push(glua.LNumber(float64(s.start.UnixMilli()) / 1000))
			return 1
		},
		"read_body":     func(L *glua.LState) int { s.check(L, phasesRequestBody); return 0 },
		"discard_body":  func(L *glua.LState) int { s.check(L, phasesRequestBody); return 0 },
		"get_body_file": func(L *glua.LState) int { s.check(L, phasesRequestBody); L.Push(glua.LNil); return 1 },
		"get_body_data": func(L *glua.LState) int {
			b, ok := s.check(L, phasesRequestBody).Body()
			if !ok || len(b) == 0 {
				L.Push(glua.LNil)
				return 1
			}
			L.Push(glua.LString(b))
			return 1
		},
		"set_body_data": set(func(h Host, L *glua.LState) { h.SetBody([]byte(L.CheckString(1))) }),
		"set_header": set(func(h Host, L *glua.LState) {
			n := headerName(L, 1)
			h.ClearHeader(n)
			if L.Get(2) == glua.LNil {
				return
			}
			for _, v := range headerValues(L, 2) {
				h.AddHeader(n, v)
			}
		}),
		"clear_header": set(func(h Host, L *glua.LState) { h.ClearHeader(headerName(L, 1)) }),
		"set_uri": set(func(h Host, L *glua.LState) {
			u := L.CheckString(1)
			if L.OptBool(2, false) {
				L.RaiseError("ngx.req.set_uri with jump is not supported by sidecall (no internal redirects)")
			}
			if !strings.HasPrefix(u, "/") {
				u = "/" + u
			}
			h.SetPath(u)
		}),
		"set_uri_args": set(func(h Host, L *glua.LState) {
			switch v := L.Get(1).(type) {
			case glua.LString:
				h.SetRawQuery(string(v))
			case *glua.LTable:
				m, _ := s.toGo(v, 0).(map[string]any)
				h.SetRawQuery(EncodeQuery(m))
			default:
				L.RaiseError("bad argument #1 to 'set_uri_args' (string or table expected)")
			}
		}),
		"set_method": set(func(h Host, L *glua.LState) {
			switch v := L.Get(1).(type) {
			case glua.LNumber:
				for name, n := range ngxMethods {
					if n == int(v) {
						h.SetMethod(name)
						return
					}
				}
				L.RaiseError("unsupported HTTP method: %d", int(v))
			case glua.LString:
				h.SetMethod(strings.ToUpper(string(v)))
			default:
				L.RaiseError("bad argument #1 to 'set_method' (number expected)")
			}
		}),
	})
	s.meter(t, "get_headers", "get_uri_args", "get_post_args", "get_body_data")
	return t
}

// osTable is os as Kong's sandbox has it: clock, date, difftime, time.
func (s *state) osTable(g *glua.LTable) *glua.LTable {
	L := s.L
	L.Push(L.NewFunction(glua.OpenOs))
	L.Push(glua.LString(glua.OsLibName))
	L.Call(1, 0)
	full := g.RawGetString("os").(*glua.LTable)
	g.RawSetString("os", glua.LNil)
	t := L.NewTable()
	for _, n := range []string{"clock", "date", "difftime", "time"} {
		t.RawSetString(n, full.RawGetString(n))
	}
	date := full.RawGetString("date").(*glua.LFunction).GFunction
	t.RawSetString("date", L.NewFunction(func(L *glua.LState) int {
		if len(L.OptString(1, "")) > 256 {
			L.RaiseError("os.date: format too long")
		}
		return date(L)
	}))
	return t
}
