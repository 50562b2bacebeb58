package envoy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeStream is the server side of one ext_proc stream.
type fakeStream struct {
	s  extprocv3.ExternalProcessor_ProcessServer
	md metadata.MD

	mu     sync.Mutex
	got    []*extprocv3.ProcessingRequest
	endErr error // what Recv returned at the end (io.EOF or Canceled)
}

func (fs *fakeStream) recv() (*extprocv3.ProcessingRequest, bool) {
	m, err := fs.s.Recv()
	if err != nil {
		fs.mu.Lock()
		fs.endErr = err
		fs.mu.Unlock()
		return nil, false
	}
	fs.mu.Lock()
	fs.got = append(fs.got, m)
	fs.mu.Unlock()
	return m, true
}

func (fs *fakeStream) send(r *extprocv3.ProcessingResponse) { _ = fs.s.Send(r) }

// script is what the fake processor does with one stream.
type script func(fs *fakeStream) error

type fakeServer struct {
	extprocv3.UnimplementedExternalProcessorServer
	addr   string
	srv    *grpc.Server
	script script

	mu      sync.Mutex
	streams []*fakeStream
	wg      sync.WaitGroup
}

func (s *fakeServer) Process(ps extprocv3.ExternalProcessor_ProcessServer) error {
	s.wg.Add(1)
	defer s.wg.Done()
	md, _ := metadata.FromIncomingContext(ps.Context())
	fs := &fakeStream{s: ps, md: md}
	s.mu.Lock()
	s.streams = append(s.streams, fs)
	s.mu.Unlock()
	return s.script(fs)
}

func (s *fakeServer) stream(t *testing.T, i int) *fakeStream {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if i >= len(s.streams) {
		t.Fatalf("processor saw %d streams, want at least %d", len(s.streams), i+1)
	}
	return s.streams[i]
}

func (s *fakeServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// waitEnd waits until the processor's handlers returned.
func (s *fakeServer) waitEnd() { s.wg.Wait() }

func startFake(t *testing.T, sc script) *fakeServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := &fakeServer{addr: lis.Addr().String(), srv: grpc.NewServer(), script: sc}
	extprocv3.RegisterExternalProcessorServer(fs.srv, fs)
	go func() { _ = fs.srv.Serve(lis) }()
	t.Cleanup(fs.srv.Stop)
	return fs
}

// answer replies to every message with reply(msg) (nil: no reply) until
// Envoy ends the stream.
func answer(reply func(*extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse) script {
	return func(fs *fakeStream) error {
		for {
			m, ok := fs.recv()
			if !ok {
				return nil
			}
			for _, r := range reply(m) {
				fs.send(r)
			}
		}
	}
}

// cont is the plain CONTINUE reply for any message.
func cont(m *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	return reply(m, &extprocv3.CommonResponse{})
}

func contAll(m *extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
	return []*extprocv3.ProcessingResponse{cont(m)}
}

// reply answers m with the matching oneof carrying cr.
func reply(m *extprocv3.ProcessingRequest, cr *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	switch m.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{Response: cr}}}
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{Response: cr}}}
	case *extprocv3.ProcessingRequest_RequestBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{Response: cr}}}
	case *extprocv3.ProcessingRequest_ResponseBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{Response: cr}}}
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{HeaderMutation: cr.GetHeaderMutation()}}}
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{HeaderMutation: cr.GetHeaderMutation()}}}
	}
	return &extprocv3.ProcessingResponse{}
}

func setH(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)}}
}

func addH(k, v string) *corev3.HeaderValueOption {
	o := setH(k, v)
	o.Append = wrapperspb.Bool(true)
	return o
}

func mutation(set ...*corev3.HeaderValueOption) *extprocv3.HeaderMutation {
	return &extprocv3.HeaderMutation{SetHeaders: set}
}

// seen is what the upstream received.
type seen struct {
	Method, Path, Host string
	Header             http.Header
	Body               string
	Trailer            http.Header
	ContentLength      int64
}

type upstream struct {
	*httptest.Server
	mu    sync.Mutex
	reqs  []seen
	reply func(w http.ResponseWriter, r *http.Request, body []byte)
}

func (u *upstream) last(t *testing.T) seen {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		t.Fatal("upstream saw no request")
	}
	return u.reqs[len(u.reqs)-1]
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, seen{Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host, Header: r.Header.Clone(),
			Body: string(b), Trailer: r.Trailer.Clone(), ContentLength: r.ContentLength})
		rep := u.reply
		u.mu.Unlock()
		if rep != nil {
			rep(w, r, b)
			return
		}
		w.Header().Set("X-Up", "1")
		_, _ = io.WriteString(w, "upstream:"+string(b))
	}))
	t.Cleanup(u.Close)
	return u
}

type env struct {
	p  *Proxy
	ps *fakeServer
	up *upstream
}

// setup starts a fake processor running sc, a real upstream and a Proxy
// configured by cfg (Upstream and Conn are filled in).
func setup(t *testing.T, sc script, cfg Config) *env {
	t.Helper()
	ps := startFake(t, sc)
	up := startUpstream(t)
	conn, err := grpc.NewClient(ps.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Upstream = up.URL
	cfg.Conn = conn
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Close()
		_ = conn.Close()
	})
	return &env{p: p, ps: ps, up: up}
}

func (e *env) do(t *testing.T, method, target, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://app.local"+target, r)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	res, err := e.p.Do(req)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func headerOf(hm *corev3.HeaderMap, k string) (string, bool) {
	for _, h := range hm.GetHeaders() {
		if h.GetKey() == k {
			return string(h.GetRawValue()), true
		}
	}
	return "", false
}

func wantStatus(t *testing.T, res *http.Response, want int) {
	t.Helper()
	if res.StatusCode != want {
		t.Fatalf("status %d, want %d", res.StatusCode, want)
	}
}

func isNormalEnd(err error) bool {
	return errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled
}

var _ = context.Background
var _ = time.Second
