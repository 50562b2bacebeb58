package envoy

import (
	"bytes"
	"io"
	"net/http"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// bodyIn is one direction's body source and where its trailers go.
type bodyIn struct {
	src      io.Reader
	raw      <-chan chunk        // set when the body is already read chunk by chunk
	pending  <-chan pendingChunk // set when a STREAMED pump already runs
	duplex   <-chan struct{}     // set when a FULL_DUPLEX_STREAMED pump already runs
	has      bool
	trailers func() http.Header // the source's trailers, complete after EOF
	out      http.Header        // trailers to forward are written here
	stripCL  bool
}

func (in bodyIn) reader() io.Reader {
	if in.raw != nil {
		return &chanReader{ch: in.raw}
	}
	return in.src
}

type chunk struct {
	data []byte
	eos  bool
	err  error
}

// readChunks reads src on its own goroutine, one chunk per Read, the way
// Envoy's codec delivers data callbacks while the filter waits.
func readChunks(src io.Reader, done <-chan struct{}) <-chan chunk {
	ch := make(chan chunk, 1024)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32*1024)
			n, err := src.Read(buf)
			c := chunk{data: buf[:n]}
			switch {
			case err == io.EOF:
				c.eos = true
			case err != nil:
				c.err = err
			case n == 0:
				continue
			}
			select {
			case ch <- c:
			case <-done:
				return
			}
			if c.eos || c.err != nil {
				return
			}
		}
	}()
	return ch
}

type chanReader struct {
	ch  <-chan chunk
	buf []byte
	err error
}

func (c *chanReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		ch, ok := <-c.ch
		switch {
		case !ok:
			c.err = io.ErrUnexpectedEOF
		case ch.eos:
			c.err = io.EOF
		case ch.err != nil:
			c.err = ch.err
		}
		if ok {
			c.buf = ch.data
		}
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func nonEmpty(h http.Header) http.Header {
	out := http.Header{}
	for k, vs := range h {
		if len(vs) > 0 {
			out[k] = vs
		}
	}
	return out
}

// bodyPhase runs one direction's body processing per its current mode and
// returns the reader of what is forwarded. BUFFERED modes finish their
// exchange before returning (the headers are held meanwhile).
func (f *filter) bodyPhase(d *direction, hm *headerMap, in bodyIn, replaced *[]byte) (io.Reader, *terminal) {
	if replaced != nil {
		// CONTINUE_AND_REPLACE: the new body wins, later data is drained.
		_, _ = io.Copy(io.Discard, in.reader())
		copyTrailers(in.out, in.trailers())
		f.setFinished(d)
		return bytes.NewReader(*replaced), nil
	}
	if !in.has {
		f.setFinished(d)
		return http.NoBody, nil
	}
	_, bm, ts := f.modes(d)
	if in.pending != nil {
		bm = modeStreamed
	}
	if in.duplex != nil {
		bm = modeDuplex
	}
	if !f.active() && in.pending == nil && in.duplex == nil {
		bm, ts = modeNone, false
	}
	switch bm {
	case modeDuplex:
		return f.duplexBody(d, in), nil
	case modeBuffered, modePartial:
		return f.buffered(d, hm, in, bm == modePartial)
	case modeStreamed:
		pending := in.pending
		if pending == nil {
			raw := in.raw
			if raw == nil {
				raw = readChunks(in.src, f.done)
			}
			pending = f.startStreamed(d, raw, true, in.trailers)
		}
		return &streamedReader{f: f, d: d, pending: pending, in: in}, nil
	}
	if !ts {
		f.setFinished(d)
	}
	return &tailReader{f: f, d: d, r: in.reader(), in: in}, nil
}

// buffered is BUFFERED (whole body, one message) and BUFFERED_PARTIAL (up
// to the buffer limit, one message, the rest passes through).
func (f *filter) buffered(d *direction, hm *headerMap, in bodyIn, partial bool) (io.Reader, *terminal) {
	limit := f.p.cfg.BufferLimit
	src := in.reader()
	eos := true
	var rest io.Reader
	var data []byte
	var err error
	if !partial {
		data, err = io.ReadAll(io.LimitReader(src, int64(limit)+1))
		if err == nil && len(data) > limit {
			if d.isReq {
				return nil, &terminal{kind: "buffer_limit", status: http.StatusRequestEntityTooLarge,
					details: "request_payload_too_large", body: "Payload Too Large"}
			}
			return nil, &terminal{kind: "buffer_limit", status: http.StatusInternalServerError,
				details: "response_payload_too_large", body: "Internal Server Error"}
		}
	} else {
		data, err = io.ReadAll(io.LimitReader(src, int64(limit)))
		if err == nil && len(data) == limit {
			var b [1]byte
			if n, _ := io.ReadFull(src, b[:]); n == 1 {
				eos = false
				rest = io.MultiReader(bytes.NewReader(b[:]), src)
			}
		}
	}
	if err != nil {
		return nil, readFailed(d)
	}
	hasTrailers := eos && len(nonEmpty(in.trailers())) > 0
	resp, t := f.exchange(d, kBody, func(m *extprocv3.ProcessingRequest) {
		b := &extprocv3.HttpBody{Body: data, EndOfStream: eos && !hasTrailers}
		if d.isReq {
			m.Request = &extprocv3.ProcessingRequest_RequestBody{RequestBody: b}
		} else {
			m.Request = &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: b}
		}
	})
	if t != nil && !t.cont {
		return nil, t
	}
	if t == nil {
		cr := bodyReply(resp, d)
		replacing := cr.GetStatus() == extprocv3.CommonResponse_CONTINUE_AND_REPLACE
		// The headers are still held, so a header mutation applies.
		if err := applyHeaderMutation(hm, cr.GetHeaderMutation(), f.mctx(in.stripCL, replacing, d.isReq)); err != nil {
			return nil, f.mutationFailed(err)
		}
		if d.isReq {
			f.clearRouteCache(cr, hm)
		}
		if bm := cr.GetBodyMutation(); bm != nil {
			// Envoy checks any body_mutation in BUFFERED mode against its
			// body field: clear_body, or no mutation at all, count as 0.
			if !partial {
				if err := checkContentLength(hm, len(bm.GetBody())); err != nil {
					return nil, f.mutationFailed(err)
				}
			}
			data = applyBodyMutation(data, bm)
		}
	}
	if eos {
		if t := f.processTrailers(d, in); t != nil {
			return nil, t
		}
		f.setFinished(d)
		return bytes.NewReader(data), nil
	}
	if _, _, ts := f.modes(d); !ts {
		f.setFinished(d)
	}
	return io.MultiReader(bytes.NewReader(data), &tailReader{f: f, d: d, r: rest, in: in}), nil
}

func readFailed(d *direction) *terminal {
	if d.isReq {
		return &terminal{kind: "body_read", status: http.StatusBadRequest, details: "downstream_remote_disconnect"}
	}
	return &terminal{kind: "body_read", status: http.StatusBadGateway, details: "upstream_reset_after_response_started"}
}

func bodyReply(resp *extprocv3.ProcessingResponse, d *direction) *extprocv3.CommonResponse {
	if d.isReq {
		return resp.GetRequestBody().GetResponse()
	}
	return resp.GetResponseBody().GetResponse()
}

// processTrailers sends trailers when the mode says SEND and the source
// really had some, and writes what is forwarded into in.out.
func (f *filter) processTrailers(d *direction, in bodyIn) *terminal {
	tr := nonEmpty(in.trailers())
	if len(tr) == 0 {
		return nil
	}
	if _, _, ts := f.modes(d); ts && f.active() {
		tm := &headerMap{}
		addSorted(tm, tr)
		resp, t := f.exchange(d, kTrailers, func(m *extprocv3.ProcessingRequest) {
			ht := &extprocv3.HttpTrailers{Trailers: tm.proto()}
			if d.isReq {
				m.Request = &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: ht}
			} else {
				m.Request = &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: ht}
			}
		})
		if t != nil && !t.cont {
			return t
		}
		if t == nil {
			mut := resp.GetRequestTrailers().GetHeaderMutation()
			if !d.isReq {
				mut = resp.GetResponseTrailers().GetHeaderMutation()
			}
			if err := applyHeaderMutation(tm, mut, f.mctx(false, false, false)); err != nil {
				return f.mutationFailed(err)
			}
			for k := range in.out {
				delete(in.out, k)
			}
			for _, e := range tm.h {
				k := http.CanonicalHeaderKey(e.k)
				in.out[k] = append(in.out[k], e.v)
			}
			return nil
		}
	}
	copyTrailers(in.out, tr)
	return nil
}

func copyTrailers(dst, src http.Header) {
	for k, vs := range nonEmpty(src) {
		dst[k] = append([]string(nil), vs...)
	}
}

// tailReader passes a body through and handles trailers at its end.
type tailReader struct {
	f   *filter
	d   *direction
	r   io.Reader
	in  bodyIn
	err error
}

func (t *tailReader) Read(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	n, err := t.r.Read(p)
	if err == io.EOF {
		if term := t.f.processTrailers(t.d, t.in); term != nil {
			t.err = term
			return n, nil
		}
		t.f.setFinished(t.d)
	}
	if err != nil {
		t.err = err
	}
	return n, err
}

type pendingChunk struct {
	data      []byte
	processed bool // a body message was sent for it: await its reply
	eos       bool
	err       error
}

// startStreamed is the STREAMED pump: each chunk becomes one body message,
// sent without waiting for earlier replies. With coalesce, whatever
// arrived while the headers reply was awaited goes as one chunk.
func (f *filter) startStreamed(d *direction, raw <-chan chunk, coalesce bool, trailers func() http.Header) <-chan pendingChunk {
	pending := make(chan pendingChunk, 1024)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer close(pending)
		first := true
		for {
			var c chunk
			var ok bool
			select {
			case c, ok = <-raw:
			case <-f.done:
				return
			}
			if !ok {
				return
			}
			if first && coalesce {
			drain:
				for !c.eos && c.err == nil {
					select {
					case more, ok := <-raw:
						if !ok {
							break drain
						}
						c.data = append(c.data, more.data...)
						c.eos, c.err = more.eos, more.err
					default:
						break drain
					}
				}
			}
			first = false
			pc := pendingChunk{data: c.data, eos: c.eos, err: c.err}
			if c.err == nil {
				hasTrailers := c.eos && len(nonEmpty(trailers())) > 0
				_, bm, _ := f.modes(d)
				if !(hasTrailers && len(c.data) == 0) && bm == modeStreamed {
					pc.processed = f.send(d, kBody, func(m *extprocv3.ProcessingRequest) {
						b := &extprocv3.HttpBody{Body: c.data, EndOfStream: c.eos && !hasTrailers}
						if d.isReq {
							m.Request = &extprocv3.ProcessingRequest_RequestBody{RequestBody: b}
						} else {
							m.Request = &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: b}
						}
					})
				}
			}
			select {
			case pending <- pc:
			case <-f.done:
				return
			}
			if c.eos || c.err != nil {
				return
			}
		}
	}()
	return pending
}

// streamedReader yields each chunk once its reply arrived, in order, with
// that reply's body mutation applied; header mutations are ignored since
// the headers are already forwarded.
type streamedReader struct {
	f       *filter
	d       *direction
	pending <-chan pendingChunk
	in      bodyIn
	buf     []byte
	err     error
}

func (s *streamedReader) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		pc, ok := <-s.pending
		if !ok {
			s.err = io.ErrUnexpectedEOF
			continue
		}
		if pc.err != nil {
			s.err = pc.err
			continue
		}
		data := pc.data
		if pc.processed {
			resp, t := s.f.await(s.d)
			if t != nil && !t.cont {
				s.err = t
				continue
			}
			if t == nil {
				cr := bodyReply(resp, s.d)
				if s.d.isReq {
					// Counted as Envoy does; the route is already chosen.
					s.f.routeCacheCleared(cr)
				}
				data = applyBodyMutation(data, cr.GetBodyMutation())
			}
		}
		s.buf = data
		if pc.eos {
			if t := s.f.processTrailers(s.d, s.in); t != nil {
				s.err = t
				s.buf = nil
				continue
			}
			s.f.setFinished(s.d)
			s.err = io.EOF
		}
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}
