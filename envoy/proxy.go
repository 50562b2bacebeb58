package envoy

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	extprocfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// hopByHop are the connection-specific headers Envoy's codecs drop.
var hopByHop = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "upgrade": true, "trailer": true,
}

// ServeHTTP runs one HTTP request through the ext_proc filter and the router.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f := p.newFilter(r)
	code, details := 0, "downstream_reset"
	defer func() { f.finish(code, details) }()
	code, details = f.serve(w, &code)
}

// errReset is returned by Do when Envoy would have reset the downstream
// stream (an error after the response started).
var errReset = errors.New("envoy: downstream stream reset")

// Do runs a client-style request (as built by http.NewRequest) through the
// proxy in-process and returns the response the client would get.
func (p *Proxy) Do(req *http.Request) (res *http.Response, err error) {
	sr := req.Clone(req.Context())
	sr.RequestURI = req.URL.RequestURI()
	sr.URL = &url.URL{Path: req.URL.Path, RawPath: req.URL.RawPath, RawQuery: req.URL.RawQuery}
	if sr.Host == "" {
		sr.Host = req.URL.Host
	}
	if sr.Host == "" {
		sr.Host = "localhost"
	}
	if sr.RemoteAddr == "" {
		sr.RemoteAddr = "127.0.0.1:50000"
	}
	sr.Proto, sr.ProtoMajor, sr.ProtoMinor = "HTTP/1.1", 1, 1
	if sr.Body == nil || sr.Body == http.NoBody {
		sr.Body, sr.ContentLength = http.NoBody, 0
	} else if sr.ContentLength == 0 {
		sr.ContentLength = -1
	}
	if sr.ContentLength > 0 && sr.Header.Get("Content-Length") == "" {
		sr.Header.Set("Content-Length", strconv.FormatInt(sr.ContentLength, 10))
	}
	if _, ok := sr.Context().Value(http.LocalAddrContextKey).(net.Addr); !ok {
		sr = sr.WithContext(context.WithValue(sr.Context(), http.LocalAddrContextKey,
			&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15001}))
	}
	rec := httptest.NewRecorder()
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler { //nolint:errorlint // sentinel panic value
				res, err = nil, errReset
				return
			}
			panic(v)
		}
	}()
	p.ServeHTTP(rec, sr)
	return rec.Result(), nil
}

// serve is the decode path, the router and the encode path. It returns the
// status sent downstream and Envoy's response code details.
func (f *filter) serve(w http.ResponseWriter, codeOut *int) (int, string) {
	r, p := f.r, f.p
	hm := requestHeaders(r)
	f.mu.Lock()
	f.reqHdr = hm
	f.mu.Unlock()
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	endStream := !hasBody && len(r.Trailer) == 0
	hs, bm, _ := f.modes(f.req)
	stripCL := shouldStripCL(bm, hs)

	in := bodyIn{src: r.Body, has: hasBody, trailers: func() http.Header { return r.Trailer }, out: http.Header{}, stripCL: stripCL}
	for k := range r.Trailer {
		in.out[k] = nil
	}
	if (bm == modeStreamed || bm == modeDuplex) && hasBody {
		in.raw = readChunks(r.Body, f.done)
	}
	var replaced *[]byte
	if hs {
		sent := f.send(f.req, kHeaders, func(m *extprocv3.ProcessingRequest) {
			m.Request = &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
				Headers: hm.proto(), EndOfStream: endStream}}
		})
		switch {
		case sent && bm == modeDuplex && in.raw != nil:
			// FULL_DUPLEX_STREAMED: the body goes out as it arrives.
			in.duplex = f.startDuplex(f.req, in)
		case sent && p.cfg.SendBodyWithoutWaiting && in.raw != nil:
			in.pending = f.startStreamed(f.req, in.raw, false, in.trailers)
		}
		resp, t := f.awaitSent(f.req, sent)
		if t != nil && !t.cont {
			return f.writeLocal(w, t)
		}
		if t == nil {
			var err error
			if replaced, err = f.applyHeadersReply(f.req, hm, resp.GetRequestHeaders().GetResponse(), stripCL); err != nil {
				return f.writeLocal(w, f.mutationFailed(err))
			}
		}
	}
	if stripCL {
		hm.del("content-length")
	}
	if endStream {
		f.setFinished(f.req)
	}
	body, t := f.bodyPhase(f.req, hm, in, replaced)
	if t != nil {
		return f.writeLocal(w, t)
	}

	// The router.
	outReq, err := f.upstreamRequest(r, hm, body, in.out)
	if err != nil {
		return f.writeLocal(w, &terminal{kind: "router", status: http.StatusBadRequest, details: "invalid_path"})
	}
	start := time.Now()
	res, err := p.transport.RoundTrip(outReq)
	if t := f.terminal(); t != nil && !t.cont {
		if err == nil {
			res.Body.Close()
		}
		return f.writeLocal(w, t)
	}
	details := "via_upstream"
	if err != nil {
		res, details = upstreamFailure(), "upstream_reset_before_response_started{connection_failure}"
	}
	defer res.Body.Close()
	return f.encode(w, r, res, time.Since(start), details, codeOut)
}

// awaitSent waits for the reply of a message send reported as sent.
func (f *filter) awaitSent(d *direction, sent bool) (*extprocv3.ProcessingResponse, *terminal) {
	if !sent {
		if t := f.terminal(); t != nil {
			return nil, t
		}
		return nil, passThrough
	}
	return f.await(d)
}

// encode is the response path: response_headers, the body, trailers.
func (f *filter) encode(w http.ResponseWriter, r *http.Request, res *http.Response, took time.Duration, details string, codeOut *int) (int, string) {
	rh := responseHeaders(res, took)
	f.mu.Lock()
	f.respHdr = rh
	f.mu.Unlock()
	hasBody := res.Body != nil && res.Body != http.NoBody && res.ContentLength != 0 &&
		r.Method != http.MethodHead && res.StatusCode != http.StatusNoContent && res.StatusCode != http.StatusNotModified
	hs, bm, _ := f.modes(f.resp)
	if f.resp.nothingConfiguredLocked(f) {
		f.setFinished(f.resp)
	}
	stripCL := shouldStripCL(bm, hs)
	in := bodyIn{src: res.Body, has: hasBody, trailers: func() http.Header { return res.Trailer }, out: http.Header{}, stripCL: stripCL}
	if (bm == modeStreamed || bm == modeDuplex) && hasBody {
		in.raw = readChunks(res.Body, f.done)
	}
	endStream := !hasBody && len(res.Trailer) == 0
	var replaced *[]byte
	if hs {
		sent := f.send(f.resp, kHeaders, func(m *extprocv3.ProcessingRequest) {
			m.Request = &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
				Headers: rh.proto(), EndOfStream: endStream}}
		})
		if sent && bm == modeDuplex && in.raw != nil {
			in.duplex = f.startDuplex(f.resp, in)
		}
		resp, t := f.awaitSent(f.resp, sent)
		if t != nil && !t.cont {
			return f.writeLocal(w, t)
		}
		if t == nil {
			var err error
			if replaced, err = f.applyHeadersReply(f.resp, rh, resp.GetResponseHeaders().GetResponse(), stripCL); err != nil {
				return f.writeLocal(w, f.mutationFailed(err))
			}
		}
	}
	if stripCL {
		rh.del("content-length")
	}
	if endStream {
		f.setFinished(f.resp)
	}
	body, t := f.bodyPhase(f.resp, rh, in, replaced)
	if t != nil {
		return f.writeLocal(w, t)
	}
	code := res.StatusCode
	if s, ok := rh.get(":status"); ok {
		if n, err := strconv.Atoi(s); err == nil {
			code = n
		}
	}
	h := w.Header()
	for _, e := range rh.h {
		if !strings.HasPrefix(e.k, ":") && !hopByHop[e.k] {
			k := http.CanonicalHeaderKey(e.k)
			h[k] = append(h[k], e.v)
		}
	}
	w.WriteHeader(code)
	*codeOut = code
	flusher, _ := w.(http.Flusher)
	buf := make([]byte, 32*1024)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				panic(http.ErrAbortHandler)
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			// The response already started: Envoy can only reset the stream.
			panic(http.ErrAbortHandler)
		}
	}
	for k, vs := range in.out {
		for _, v := range vs {
			h.Add(http.TrailerPrefix+k, v)
		}
	}
	return code, details
}

func (d *direction) nothingConfiguredLocked(f *filter) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return d.nothingConfigured()
}

// applyHeadersReply applies a HeadersResponse's CommonResponse. It
// returns the replacement body for CONTINUE_AND_REPLACE with a body_mutation.
func (f *filter) applyHeadersReply(d *direction, hm *headerMap, cr *extprocv3.CommonResponse, stripCL bool) (*[]byte, error) {
	if cr == nil {
		return nil, nil
	}
	replacing := cr.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE
	if err := applyHeaderMutation(hm, cr.GetHeaderMutation(), f.mctx(stripCL, replacing, d.isReq)); err != nil {
		return nil, err
	}
	if d.isReq {
		f.clearRouteCache(cr, hm)
	}
	if !replacing {
		return nil, nil // a body_mutation on CONTINUE is ignored
	}
	f.mu.Lock()
	d.bodyMode, d.trailerSend = modeNone, false
	f.mu.Unlock()
	if bm := cr.GetBodyMutation(); bm != nil {
		b := applyBodyMutation(nil, bm)
		hm.del("content-length")
		return &b, nil
	}
	return nil, nil
}

func (f *filter) mctx(stripCL, replacing, isReq bool) mutationCtx {
	return mutationCtx{
		rules: f.p.rules, maxCount: f.p.cfg.MaxHeaderCount, maxBytes: f.p.cfg.MaxHeadersKB * 1024,
		stripCL: stripCL, replacing: replacing, isRequest: isReq,
		onRejected: func() { f.p.stats.RejectedHeaderMutations.Add(1) },
	}
}

func (f *filter) mutationFailed(err error) *terminal {
	f.fail(&terminal{kind: "mutation", status: f.p.cfg.StatusOnError, details: err.Error()})
	return f.terminal()
}

// clearRouteCache is DecodingProcessorState::clearRouteCache: nothing
// happens without a header_mutation in the same CommonResponse; then
// route_cache_action decides (DEFAULT: clear iff clear_route_cache; CLEAR:
// always; RETAIN: never). A clear re-runs Route.
func (f *filter) clearRouteCache(cr *extprocv3.CommonResponse, hm *headerMap) {
	if !f.routeCacheCleared(cr) {
		return
	}
	f.p.stats.RouteCacheCleared.Add(1)
	if f.p.cfg.Route == nil {
		return
	}
	rr := f.r.Clone(f.r.Context())
	rr.Method, _ = hm.get(":method")
	rr.Host, _ = hm.get(":authority")
	rr.RequestURI, _ = hm.get(":path")
	if u, err := url.ParseRequestURI(rr.RequestURI); err == nil {
		rr.URL = u
	}
	rr.Header = http.Header{}
	for _, e := range hm.h {
		if !strings.HasPrefix(e.k, ":") {
			rr.Header.Add(e.k, e.v)
		}
	}
	rs := f.p.cfg.Route(rr)
	f.mu.Lock()
	f.routeName, f.upstreamURL = rs.Name, rs.Upstream
	f.mu.Unlock()
}

// routeCacheCleared counts clear_route_cache as Envoy does and reports
// whether the route cache is cleared.
func (f *filter) routeCacheCleared(cr *extprocv3.CommonResponse) bool {
	asked := cr.GetClearRouteCache()
	if cr.GetHeaderMutation() == nil {
		if asked {
			f.p.stats.ClearRouteCacheIgnored.Add(1)
		}
		return false
	}
	switch f.p.cfg.RouteCacheAction {
	case extprocfilterv3.ExternalProcessor_CLEAR:
		return true
	case extprocfilterv3.ExternalProcessor_RETAIN:
		if asked {
			f.p.stats.ClearRouteCacheDisabled.Add(1)
		}
		return false
	}
	return asked
}

// writeLocal sends a local reply: ext_proc's own errors and immediate
// responses (never sent to the processor). A gRPC request gets Envoy's
// trailers-only gRPC local reply: HTTP 200, grpc-status (the immediate
// response's grpc_status, or mapped from the HTTP code) and the body as
// grpc-message.
func (f *filter) writeLocal(w http.ResponseWriter, t *terminal) (int, string) {
	code, details, body := t.status, t.details, []byte(t.body)
	hm := &headerMap{}
	var grpcStatus *uint32
	if t.immediate != nil {
		ir := t.immediate
		code = int(ir.GetStatus().GetCode())
		if code < 200 {
			code = 200
		}
		body, details = ir.GetBody(), underscore(ir.GetDetails())
		if gs := ir.GetGrpcStatus(); gs != nil {
			v := gs.GetStatus()
			grpcStatus = &v
		}
		// Errors are only logged by Envoy; the reply is still sent.
		_ = applyHeaderMutation(hm, ir.GetHeaders(), f.mctx(false, false, false))
	}
	h := w.Header()
	for k := range h {
		delete(h, k)
	}
	for _, e := range hm.h {
		if !strings.HasPrefix(e.k, ":") && !hopByHop[e.k] && e.k != "content-length" {
			k := http.CanonicalHeaderKey(e.k)
			h[k] = append(h[k], e.v)
		}
	}
	if strings.HasPrefix(f.r.Header.Get("Content-Type"), "application/grpc") {
		h.Set("Content-Type", "application/grpc")
		if h.Get("Grpc-Status") == "" {
			s := httpToGRPCStatus(code)
			if grpcStatus != nil {
				s = *grpcStatus
			}
			h.Set("Grpc-Status", strconv.FormatUint(uint64(s), 10))
		}
		if len(body) > 0 && f.r.Method != http.MethodHead {
			h.Set("Grpc-Message", percentEncode(string(body)))
		}
		h.Set("Content-Length", "0")
		w.WriteHeader(http.StatusOK)
		return http.StatusOK, details
	}
	if len(body) > 0 && h.Get("Content-Type") == "" {
		h.Set("Content-Type", "text/plain")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = w.Write(body)
	return code, details
}

// httpToGRPCStatus is Envoy's Grpc::Utility::httpToGrpcStatus.
func httpToGRPCStatus(code int) uint32 {
	switch code {
	case 400:
		return 13 // INTERNAL
	case 401:
		return 16 // UNAUTHENTICATED
	case 403:
		return 7 // PERMISSION_DENIED
	case 404:
		return 12 // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}

// percentEncode is the grpc-message encoding: bytes outside printable
// ASCII, and '%', become %XX.
func percentEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func (f *filter) upstreamRequest(r *http.Request, hm *headerMap, body io.Reader, trailers http.Header) (*http.Request, error) {
	method, _ := hm.get(":method")
	path, _ := hm.get(":path")
	authority, _ := hm.get(":authority")
	f.mu.Lock()
	base := f.upstreamURL
	f.mu.Unlock()
	u := f.p.upstream
	if base != "" {
		pu, err := url.Parse(base)
		if err != nil {
			return nil, fmt.Errorf("route upstream %q: %w", base, err)
		}
		u = pu
	}
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("invalid :path %q", path)
	}
	target := u.Scheme + "://" + u.Host + strings.TrimSuffix(u.Path, "/") + path
	ctx, cancel := context.WithCancel(r.Context())
	f.mu.Lock()
	f.upCancel = cancel
	f.mu.Unlock()
	if body == http.NoBody {
		body = nil
	}
	out, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	out.Host = authority
	out.ContentLength = -1
	if body == nil {
		out.ContentLength = 0
	}
	for _, e := range hm.h {
		if strings.HasPrefix(e.k, ":") || hopByHop[e.k] {
			continue
		}
		if e.k == "content-length" {
			if n, err := strconv.ParseInt(e.v, 10, 64); err == nil && body != nil {
				out.ContentLength = n
			}
			continue
		}
		k := http.CanonicalHeaderKey(e.k)
		out.Header[k] = append(out.Header[k], e.v)
	}
	out.Header.Set("X-Envoy-Expected-Rq-Timeout-Ms", "15000")
	if len(r.Trailer) > 0 {
		out.Trailer = trailers
	}
	return out, nil
}

// upstreamFailure is the router's local reply when the upstream cannot be
// reached; it does go through the response path (Envoy 1.37+).
func upstreamFailure() *http.Response {
	const body = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	return &http.Response{
		StatusCode:    http.StatusServiceUnavailable,
		Header:        http.Header{"Content-Type": {"text/plain"}, "Content-Length": {strconv.Itoa(len(body))}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
	}
}

// requestHeaders builds the request header map as Envoy's HCM has it when
// ext_proc runs.
func requestHeaders(r *http.Request) *headerMap {
	hm := &headerMap{}
	path := r.RequestURI
	if !strings.HasPrefix(path, "/") {
		path = r.URL.RequestURI()
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	hm.add(":method", r.Method)
	hm.add(":path", path)
	hm.add(":scheme", scheme)
	hm.add(":authority", r.Host)
	addSorted(hm, r.Header)
	if !hm.has("x-forwarded-proto") {
		hm.add("x-forwarded-proto", scheme)
	}
	if !hm.has("x-request-id") {
		hm.add("x-request-id", newUUID())
	}
	return hm
}

func responseHeaders(res *http.Response, took time.Duration) *headerMap {
	hm := &headerMap{}
	hm.add(":status", strconv.Itoa(res.StatusCode))
	addSorted(hm, res.Header)
	hm.add("x-envoy-upstream-service-time", strconv.FormatInt(took.Milliseconds(), 10))
	return hm
}

func addSorted(hm *headerMap, h http.Header) {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		lk := strings.ToLower(k)
		if hopByHop[lk] {
			continue
		}
		for _, v := range h[k] {
			hm.add(lk, v)
		}
	}
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// shouldStripCL is Envoy's shouldRemoveContentLength, decided from the mode
// before any reply.
func shouldStripCL(bm extprocfilterv3.ProcessingMode_BodySendMode, headerSend bool) bool {
	switch bm {
	case modeStreamed, modePartial, modeDuplex:
		return true
	case modeBuffered:
		return !headerSend
	}
	return false
}
