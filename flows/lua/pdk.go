package lua

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math"
	"mime"
	"net/url"
	"strconv"
	"strings"
	"time"

	glua "github.com/yuin/gopher-lua"
	"go.uber.org/zap"
)

var (
	phasesRewriteAccess = []string{"rewrite", "access"}
	phasesRequestBody   = []string{"rewrite", "access"}
	phasesRespRead      = []string{"header_filter", "body_filter", "log"}
	phasesRespWrite     = []string{"rewrite", "access", "header_filter"}
	phasesExit          = []string{"rewrite", "access", "header_filter"}
	phasesBody          = []string{"body_filter"}
)

// check raises Kong's phase error when the current phase is not allowed.
func (s *state) check(L *glua.LState, phases []string) Host {
	h := s.host
	if h == nil {
		L.RaiseError("no request bound to this call")
	}
	p := h.Phase()
	for _, ok := range phases {
		if p == ok {
			return h
		}
	}
	L.RaiseError("function cannot be called in %s phase (only in: %s)", p, strings.Join(phases, ", "))
	return nil
}

func (s *state) anyPhase(L *glua.LState) Host {
	if s.host == nil {
		L.RaiseError("no request bound to this call")
	}
	return s.host
}

func fns(L *glua.LState, m map[string]glua.LGFunction) *glua.LTable {
	t := L.NewTable()
	for k, f := range m {
		t.RawSetString(k, L.NewFunction(f))
	}
	return t
}

// str converts a PDK argument to a string like Kong does (strings and
// numbers; booleans are refused).
func argString(L *glua.LState, n int, what string) string {
	switch v := L.Get(n).(type) {
	case glua.LString:
		return string(v)
	case glua.LNumber:
		return FormatNumber(float64(v))
	}
	L.RaiseError("%s must be a string", what)
	return ""
}

func headerName(L *glua.LState, n int) string {
	name, ok := L.Get(n).(glua.LString)
	if !ok || name == "" {
		L.RaiseError("invalid header name %q: got %s, expected string", L.Get(n).String(), L.Get(n).Type())
	}
	return string(name)
}

// headerValues is a header value argument: string, number, boolean or a
// list of them.
func headerValues(L *glua.LState, n int) []string {
	switch v := L.Get(n).(type) {
	case glua.LString:
		return []string{string(v)}
	case glua.LNumber:
		return []string{FormatNumber(float64(v))}
	case glua.LBool:
		return []string{strconv.FormatBool(bool(v))}
	case *glua.LTable:
		var out []string
		for i := 1; i <= v.Len(); i++ {
			out = append(out, L.ToStringMeta(v.RawGetInt(i)).String())
		}
		return out
	}
	L.RaiseError("invalid header value for %q: got %s, expected string, number or boolean", L.Get(n-1).String(), L.Get(n).Type())
	return nil
}

func (s *state) kongTable() *glua.LTable {
	L := s.L
	kong := L.NewTable()

	req := fns(L, map[string]glua.LGFunction{
		"get_method": func(L *glua.LState) int { L.Push(glua.LString(s.anyPhase(L).Method())); return 1 },
		"get_scheme": func(L *glua.LState) int { L.Push(glua.LString(s.anyPhase(L).Scheme())); return 1 },
		"get_host":   func(L *glua.LState) int { L.Push(glua.LString(s.anyPhase(L).Host())); return 1 },
		"get_port":   func(L *glua.LState) int { L.Push(glua.LNumber(s.anyPhase(L).Port())); return 1 },
		"get_path":   func(L *glua.LState) int { L.Push(glua.LString(s.anyPhase(L).Path())); return 1 },
		"get_raw_query": func(L *glua.LState) int {
			L.Push(glua.LString(s.anyPhase(L).RawQuery()))
			return 1
		},
		"get_path_with_query": func(L *glua.LState) int {
			h := s.anyPhase(L)
			p := h.Path()
			if q := h.RawQuery(); q != "" {
				p += "?" + q
			}
			L.Push(glua.LString(p))
			return 1
		},
		"get_header": func(L *glua.LState) int {
			h := s.anyPhase(L)
			vs := h.Headers()[strings.ToLower(headerName(L, 1))]
			if len(vs) == 0 {
				L.Push(glua.LNil)
				return 1
			}
			L.Push(glua.LString(vs[0]))
			return 1
		},
		"get_headers": func(L *glua.LState) int { L.Push(s.headersTable(s.anyPhase(L).Headers())); return 1 },
		"get_query": func(L *glua.LState) int {
			L.Push(s.toLuaCopy(ParseQuery(s.anyPhase(L).RawQuery()), 0))
			return 1
		},
		"get_query_arg": func(L *glua.LState) int {
			name := L.CheckString(1)
			v := ParseQuery(s.anyPhase(L).RawQuery())[name]
			if l, ok := v.([]any); ok && len(l) > 0 {
				v = l[0]
			}
			if v == nil {
				L.Push(glua.LNil)
			} else {
				L.Push(s.toLuaCopy(v, 0))
			}
			return 1
		},
		"get_raw_body": func(L *glua.LState) int {
			b, ok := s.check(L, phasesRequestBody).Body()
			if !ok {
				L.Push(glua.LNil)
				L.Push(glua.LString("request body not buffered"))
				return 2
			}
			L.Push(glua.LString(b))
			return 1
		},
		"get_body": s.getBody,
	})
	s.moreRequest(req)
	s.meter(req, "get_raw_body", "get_body", "get_headers", "get_query")
	kong.RawSetString("request", s.readOnly(req))
	kong.RawSetString("client", s.readOnly(s.clientTable()))
	kong.RawSetString("router", s.readOnly(s.routerTable()))
	kong.RawSetString("node", s.readOnly(s.nodeTable()))
	kong.RawSetString("configuration", s.readOnly(s.configurationTable()))
	kong.RawSetString("table", s.readOnly(s.kongTableLib()))
	s.cacheView = s.readOnly(s.cacheTable())
	kong.RawSetString("cache", s.cacheView)

	set := func(f func(h Host, L *glua.LState)) glua.LGFunction {
		return func(L *glua.LState) int { f(s.check(L, phasesRewriteAccess), L); return 0 }
	}
	svcReq := fns(L, map[string]glua.LGFunction{
		"set_header": set(func(h Host, L *glua.LState) {
			n := headerName(L, 1)
			vs := headerValues(L, 2)
			h.ClearHeader(n)
			for _, v := range vs {
				h.AddHeader(n, v)
			}
		}),
		"add_header": set(func(h Host, L *glua.LState) {
			n := headerName(L, 1)
			for _, v := range headerValues(L, 2) {
				h.AddHeader(n, v)
			}
		}),
		"clear_header": set(func(h Host, L *glua.LState) { h.ClearHeader(headerName(L, 1)) }),
		"set_headers": set(func(h Host, L *glua.LState) {
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
				h.ClearHeader(string(ks))
				for _, e := range vs {
					h.AddHeader(string(ks), e)
				}
			})
		}),
		"set_path": set(func(h Host, L *glua.LState) {
			p := L.CheckString(1)
			if !strings.HasPrefix(p, "/") {
				L.RaiseError("path must start with /")
			}
			h.SetPath(p)
		}),
		"set_raw_query": set(func(h Host, L *glua.LState) { h.SetRawQuery(L.CheckString(1)) }),
		"set_query": set(func(h Host, L *glua.LState) {
			m, _ := s.toGo(L.CheckTable(1), 0).(map[string]any)
			h.SetRawQuery(EncodeQuery(m))
		}),
		"set_method": set(func(h Host, L *glua.LState) {
			m := L.CheckString(1)
			switch strings.ToUpper(m) {
			case "GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "MKCOL", "COPY", "MOVE", "PROPFIND", "PROPPATCH", "LOCK", "UNLOCK", "PATCH", "TRACE", "CONNECT":
			default:
				L.RaiseError("invalid method: %s", m)
			}
			h.SetMethod(strings.ToUpper(m))
		}),
		"set_raw_body": set(func(h Host, L *glua.LState) { h.SetBody([]byte(L.CheckString(1))) }),
		"set_body": set(func(h Host, L *glua.LState) {
			v := s.toGo(L.CheckTable(1), 0)
			ct := L.OptString(2, "")
			given := ct != ""
			if !given {
				if vs := h.Headers()["content-type"]; len(vs) > 0 {
					ct = vs[0]
				}
			}
			mt, _, _ := mime.ParseMediaType(ct)
			var b []byte
			switch {
			case mt == "application/x-www-form-urlencoded":
				m, _ := v.(map[string]any)
				b = []byte(EncodeQuery(m))
			case mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "":
				enc, err := marshalJSON(v)
				if err != nil {
					L.RaiseError("encoding body: %s", err.Error())
				}
				b = enc
				if mt == "" {
					ct, given = "application/json", true
				}
			default:
				L.RaiseError("unsupported content type %q (sidecall encodes JSON and form bodies)", mt)
			}
			if given {
				// As Kong, the mime type given (or chosen) becomes the
				// request's content-type.
				h.SetHeader("content-type", ct)
			}
			h.SetBody(b)
		}),
	})
	svcReq.RawSetString("enable_buffering", L.NewFunction(func(L *glua.LState) int {
		s.check(L, phasesRewriteAccess) // the plugin buffers the response (serverless Needs)
		return 0
	}))
	svc := L.NewTable()
	svc.RawSetString("request", s.readOnly(svcReq))
	svc.RawSetString("response", s.readOnly(s.serviceResponse()))
	kong.RawSetString("service", s.readOnly(svc))

	resp := fns(L, s.respGetters(map[string]glua.LGFunction{
		"set_header": func(L *glua.LState) int {
			h := s.check(L, phasesRespWrite)
			n := headerName(L, 1)
			vs := headerValues(L, 2)
			h.ClearResponseHeader(n)
			for _, v := range vs {
				h.AddResponseHeader(n, v)
			}
			return 0
		},
		"add_header": func(L *glua.LState) int {
			h := s.check(L, phasesRespWrite)
			n := headerName(L, 1)
			for _, v := range headerValues(L, 2) {
				h.AddResponseHeader(n, v)
			}
			return 0
		},
		"clear_header": func(L *glua.LState) int {
			s.check(L, phasesRespWrite).ClearResponseHeader(headerName(L, 1))
			return 0
		},
		"set_status": func(L *glua.LState) int {
			h := s.check(L, phasesRespWrite)
			code := L.CheckInt(1)
			if code < 100 || code > 599 {
				L.RaiseError("code must be an integer between 100 and 599")
			}
			h.SetStatus(code)
			return 0
		},
		"get_raw_body": func(L *glua.LState) int {
			b, ok := s.check(L, phasesBody).ResponseBody()
			if !ok {
				L.Push(glua.LNil)
				return 1
			}
			L.Push(glua.LString(b))
			return 1
		},
		"set_raw_body": func(L *glua.LState) int {
			s.check(L, phasesBody).SetResponseBody([]byte(L.CheckString(1)))
			return 0
		},
		"exit": s.exit,
	}))
	s.moreResponse(resp)
	s.meter(resp, "get_raw_body", "get_headers")
	kong.RawSetString("response", s.readOnly(resp))

	ctx := s.seal(L.NewTable())
	ctx.Metatable = s.protectedMT(map[string]glua.LValue{
		"__index": L.NewFunction(func(L *glua.LState) int {
			switch L.CheckString(2) {
			case "shared":
				if s.host != nil {
					if m := s.host.Shared(); m != nil {
						L.Push(s.liveMap(m))
						return 1
					}
				}
			case "plugin":
				L.Push(s.hiddenMap("\x00kong.ctx.plugin " + s.pluginScope()))
				return 1
			}
			L.Push(glua.LNil)
			return 1
		}),
		"__newindex": L.NewFunction(func(L *glua.LState) int { L.RaiseError("attempt to modify a read-only table"); return 0 }),
	})
	kong.RawSetString("ctx", ctx)

	log := L.NewTable()
	for _, lv := range []string{"debug", "info", "notice", "warn", "err", "crit", "alert", "emerg"} {
		lv := lv
		log.RawSetString(lv, L.NewFunction(func(L *glua.LState) int { s.log(lv, joinArgs(L, 1, "")); return 0 }))
	}
	log.RawSetString("inspect", L.NewFunction(func(L *glua.LState) int {
		parts := make([]string, 0, L.GetTop())
		for i := 1; i <= L.GetTop(); i++ {
			v, err := s.toGoErr(L.Get(i), 0)
			if err != nil {
				parts = append(parts, L.Get(i).String())
				continue
			}
			b, _ := marshalJSON(v)
			parts = append(parts, string(b))
		}
		s.log("notice", strings.Join(parts, " "))
		return 0
	}))
	log.RawSetString("set_serialize_value", L.NewFunction(s.setSerializeValue))
	log.RawSetString("serialize", L.NewFunction(s.serialize))
	logView := s.readOnly(log)
	// kong.log(...) is kong.log.notice(...).
	logView.Metatable.(*glua.LTable).RawSetString("__call", L.NewFunction(func(L *glua.LState) int {
		L.Remove(1)
		s.log("notice", joinArgs(L, 1, ""))
		return 0
	}))
	kong.RawSetString("log", logView)

	vault := fns(L, map[string]glua.LGFunction{
		"get": func(L *glua.LState) int {
			ref := L.CheckString(1)
			v, err := s.anyPhase(L).Vault(ref)
			if err != nil {
				L.Push(glua.LNil)
				L.Push(glua.LString(err.Error()))
				return 2
			}
			L.Push(glua.LString(v))
			return 1
		},
		"is_reference": func(L *glua.LState) int {
			r := L.CheckString(1)
			L.Push(glua.LBool(strings.HasPrefix(r, "{vault://") && strings.HasSuffix(r, "}")))
			return 1
		},
	})
	kong.RawSetString("vault", s.readOnly(vault))
	return kong
}

func joinArgs(L *glua.LState, from int, sep string) string {
	var b strings.Builder
	for i := from; i <= L.GetTop(); i++ {
		if i > from {
			b.WriteString(sep)
		}
		b.WriteString(L.ToStringMeta(L.Get(i)).String())
	}
	return b.String()
}

func (s *state) log(level, msg string) {
	l := s.logger()
	f := zap.String("source", "lua")
	switch level {
	case "debug":
		l.Debug(msg, f)
	case "info", "notice":
		l.Info(msg, f)
	case "warn":
		l.Warn(msg, f)
	default:
		l.Error(msg, f, zap.String("lua_level", level))
	}
}

func (s *state) getBody(L *glua.LState) int {
	h := s.check(L, phasesRequestBody)
	b, ok := h.Body()
	if !ok {
		L.Push(glua.LNil)
		L.Push(glua.LString("request body not buffered"))
		return 2
	}
	ct := L.OptString(1, "")
	if ct == "" {
		if vs := h.Headers()["content-type"]; len(vs) > 0 {
			ct = vs[0]
		}
	}
	if ct == "" {
		L.Push(glua.LNil)
		L.Push(glua.LString("missing content type"))
		return 2
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt = strings.ToLower(strings.TrimSpace(strings.Split(ct, ";")[0]))
	}
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		v, err := s.decodeJSON(b)
		if err != nil {
			L.Push(glua.LNil)
			L.Push(glua.LString("invalid json body"))
			L.Push(glua.LString(mt))
			return 3
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
}

func (s *state) exit(L *glua.LState) int {
	h := s.check(L, phasesExit)
	status := L.CheckInt(1)
	if status < 100 || status > 599 {
		L.RaiseError("code must be a number between 100 and 599")
	}
	hdrs := s.exitHeaders(L, 3)
	var body []byte
	switch b := L.Get(2).(type) {
	case *glua.LNilType:
	case glua.LString:
		body = []byte(b)
	case *glua.LTable:
		v := s.toGo(b, 0)
		enc, err := marshalJSON(v)
		if err != nil {
			L.RaiseError("encoding body: %s", err.Error())
		}
		body = enc
		if _, ok := hdrs["content-type"]; !ok {
			hdrs["content-type"] = []string{"application/json; charset=utf-8"}
		}
	default:
		L.RaiseError("body must be a nil, string or table")
	}
	s.finishExit(L, h, status, body, hdrs)
	return 0
}

// exitHeaders reads the headers argument n of an exit.
func (s *state) exitHeaders(L *glua.LState, n int) map[string][]string {
	hdrs := map[string][]string{}
	if t, ok := L.Get(n).(*glua.LTable); ok {
		t.ForEach(func(k, _ glua.LValue) {
			ks, ok := k.(glua.LString)
			if !ok {
				L.RaiseError("invalid header name: got %s, expected string", k.Type())
			}
			L.Push(k)
			L.Push(t.RawGet(k))
			hdrs[strings.ToLower(string(ks))] = headerValues(L, L.GetTop())
			L.Pop(2)
		})
	} else if L.Get(n) != glua.LNil {
		L.RaiseError("headers must be a nil or table")
	}
	return hdrs
}

// finishExit answers the client and stops the chunk.
func (s *state) finishExit(L *glua.LState, h Host, status int, body []byte, hdrs map[string][]string) {
	h.Exit(status, body, hdrs)
	s.exited = true
	L.Error(s.exitVal, 0)
}

func (s *state) ngxTable() *glua.LTable {
	L := s.L
	ngx := fns(L, map[string]glua.LGFunction{
		"encode_base64": func(L *glua.LState) int {
			src := []byte(L.CheckString(1))
			if L.OptBool(2, false) {
				L.Push(glua.LString(base64.RawStdEncoding.EncodeToString(src)))
			} else {
				L.Push(glua.LString(base64.StdEncoding.EncodeToString(src)))
			}
			return 1
		},
		"decode_base64": func(L *glua.LState) int {
			src := L.CheckString(1)
			enc := base64.StdEncoding
			if len(src)%4 != 0 {
				enc = base64.RawStdEncoding
				src = strings.TrimRight(src, "=")
			}
			b, err := enc.DecodeString(src)
			if err != nil {
				L.Push(glua.LNil)
				return 1
			}
			L.Push(glua.LString(b))
			return 1
		},
		"md5": func(L *glua.LState) int {
			sum := md5.Sum([]byte(L.CheckString(1)))
			L.Push(glua.LString(hex.EncodeToString(sum[:])))
			return 1
		},
		"md5_bin": func(L *glua.LState) int {
			sum := md5.Sum([]byte(L.CheckString(1)))
			L.Push(glua.LString(sum[:]))
			return 1
		},
		"sha1_bin": func(L *glua.LState) int {
			sum := sha1.Sum([]byte(L.CheckString(1)))
			L.Push(glua.LString(sum[:]))
			return 1
		},
		"time": func(L *glua.LState) int { L.Push(glua.LNumber(time.Now().Unix())); return 1 },
		"now": func(L *glua.LState) int {
			L.Push(glua.LNumber(math.Round(float64(time.Now().UnixMilli())) / 1000))
			return 1
		},
		"escape_uri":   func(L *glua.LState) int { L.Push(glua.LString(url.PathEscape(L.CheckString(1)))); return 1 },
		"unescape_uri": func(L *glua.LState) int { L.Push(glua.LString(unescape(L.CheckString(1)))); return 1 },
		"log": func(L *glua.LState) int {
			lv := L.CheckInt(1)
			names := []string{"emerg", "emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"}
			name := "notice"
			if lv >= 0 && lv < len(names) {
				name = names[lv]
			}
			s.log(name, joinArgs(L, 2, ""))
			return 0
		},
	})
	for k, v := range map[string]int{"STDERR": 0, "EMERG": 1, "ALERT": 2, "CRIT": 3, "ERR": 4, "WARN": 5, "NOTICE": 6, "INFO": 7, "DEBUG": 8,
		"HTTP_OK": 200, "HTTP_CREATED": 201, "HTTP_NO_CONTENT": 204, "HTTP_BAD_REQUEST": 400, "HTTP_UNAUTHORIZED": 401, "HTTP_FORBIDDEN": 403,
		"HTTP_NOT_FOUND": 404, "HTTP_INTERNAL_SERVER_ERROR": 500, "HTTP_BAD_GATEWAY": 502, "HTTP_SERVICE_UNAVAILABLE": 503, "HTTP_GATEWAY_TIMEOUT": 504} {
		ngx.RawSetString(k, glua.LNumber(v))
	}
	s.meter(ngx, "encode_base64", "decode_base64", "escape_uri", "unescape_uri")
	ngx.RawSetString("null", s.null)
	s.moreNgx(ngx)
	return ngx
}

func (s *state) cjsonTable(safe bool) *glua.LTable {
	L := s.L
	t := fns(L, map[string]glua.LGFunction{
		"encode": func(L *glua.LState) int {
			v, err := s.toGoErr(L.CheckAny(1), 0)
			var b []byte
			if err == nil {
				b, err = marshalJSON(v)
			}
			if err != nil {
				if safe {
					L.Push(glua.LNil)
					L.Push(glua.LString("Cannot serialise: " + err.Error()))
					return 2
				}
				L.RaiseError("Cannot serialise: %s", err.Error())
			}
			L.Push(glua.LString(b))
			return 1
		},
		"decode": func(L *glua.LState) int {
			src := L.CheckString(1)
			s.chargeBytes(4 * len(src)) // the tables are bigger than the text
			v, err := s.decodeJSON([]byte(src))
			if err != nil {
				if safe {
					L.Push(glua.LNil)
					L.Push(glua.LString(err.Error()))
					return 2
				}
				L.RaiseError("%s", err.Error())
			}
			L.Push(v)
			return 1
		},
		"encode_empty_table_as_object": func(L *glua.LState) int { return 0 },
		"decode_array_with_array_mt":   func(L *glua.LState) int { return 0 },
	})
	s.meter(t, "encode")
	t.RawSetString("null", s.null)
	t.RawSetString("array_mt", s.arrayMT)
	t.RawSetString("empty_array", s.emptyArray)
	return t
}

func (s *state) decodeJSON(b []byte) (glua.LValue, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, &jsonError{err}
	}
	if d.More() {
		return nil, &jsonError{errTrailing}
	}
	return s.toLuaCopy(v, 0), nil
}

type jsonError struct{ err error }

func (e *jsonError) Error() string { return "Expected value but found invalid token: " + e.err.Error() }

var errTrailing = errorString("trailing data after JSON value")

type errorString string

func (e errorString) Error() string { return string(e) }

func (s *state) newBignumMT() *glua.LTable {
	L := s.L
	toF := func(v glua.LValue) float64 {
		switch t := v.(type) {
		case glua.LNumber:
			return float64(t)
		case *glua.LUserData:
			if b, ok := t.Value.(bignum); ok {
				f, _ := b.n.Float64()
				return f
			}
		case glua.LString:
			f, _ := strconv.ParseFloat(string(t), 64)
			return f
		}
		L.RaiseError("attempt to perform arithmetic on a %s value", v.Type())
		return 0
	}
	arith := func(op func(a, b float64) float64) *glua.LFunction {
		return L.NewFunction(func(L *glua.LState) int {
			L.Push(glua.LNumber(op(toF(L.Get(1)), toF(L.Get(2)))))
			return 1
		})
	}
	str := func(v glua.LValue) string {
		if u, ok := v.(*glua.LUserData); ok {
			if b, ok := u.Value.(bignum); ok {
				return b.n.String()
			}
		}
		return L.ToStringMeta(v).String()
	}
	return s.protectedMT(map[string]glua.LValue{
		"__tostring": L.NewFunction(func(L *glua.LState) int { L.Push(glua.LString(str(L.Get(1)))); return 1 }),
		"__concat": L.NewFunction(func(L *glua.LState) int {
			L.Push(glua.LString(str(L.Get(1)) + str(L.Get(2))))
			return 1
		}),
		"__eq":  L.NewFunction(func(L *glua.LState) int { L.Push(glua.LBool(str(L.Get(1)) == str(L.Get(2)))); return 1 }),
		"__lt":  L.NewFunction(func(L *glua.LState) int { L.Push(glua.LBool(toF(L.Get(1)) < toF(L.Get(2)))); return 1 }),
		"__le":  L.NewFunction(func(L *glua.LState) int { L.Push(glua.LBool(toF(L.Get(1)) <= toF(L.Get(2)))); return 1 }),
		"__add": arith(func(a, b float64) float64 { return a + b }),
		"__sub": arith(func(a, b float64) float64 { return a - b }),
		"__mul": arith(func(a, b float64) float64 { return a * b }),
		"__div": arith(func(a, b float64) float64 { return a / b }),
		"__mod": arith(func(a, b float64) float64 { return a - math.Floor(a/b)*b }),
		"__pow": arith(math.Pow),
		"__unm": L.NewFunction(func(L *glua.LState) int { L.Push(glua.LNumber(-toF(L.Get(1)))); return 1 }),
	})
}

// configurationTable is kong.configuration: the few kong.conf values that
// mean something in sidecall (DB-less, sandboxed Lua, the plugins it runs).
func (s *state) configurationTable() *glua.LTable {
	L := s.L
	plugins := L.CreateTable(len(s.sb.opts.Plugins), 0)
	for _, p := range s.sb.opts.Plugins {
		plugins.Append(glua.LString(p))
	}
	t := L.NewTable()
	t.RawSetString("database", glua.LString("off"))
	t.RawSetString("role", glua.LString("traditional"))
	t.RawSetString("untrusted_lua", glua.LString("sandbox"))
	t.RawSetString("plugins", s.readOnly(plugins))
	return t
}
