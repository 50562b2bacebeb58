package envoy

import (
	"errors"
	"io"
	"net/http"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// FULL_DUPLEX_STREAMED (Envoy 1.34+): every body chunk goes to the
// processor as it arrives, without waiting for any reply, and Envoy keeps
// no copy of it. The processor answers headers first, then any number of
// BodyResponses carrying streamed_response {body, end_of_stream}, then a
// TrailersResponse if trailers were sent. What it streams back is the body
// that is forwarded. There is no message timer; only the HCM's
// stream_idle_timeout (StreamIdleTimeout) bounds the wait.

// startDuplex sends d's body chunks (and then its trailers, when the mode
// says SEND and the source had some) as they arrive.
func (f *filter) startDuplex(d *direction, in bodyIn) <-chan struct{} {
	done := make(chan struct{})
	raw := in.raw
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer close(done)
		for {
			var c chunk
			var ok bool
			select {
			case c, ok = <-raw:
			case <-f.done:
				return
			}
			if !ok || c.err != nil {
				return
			}
			tr := nonEmpty(in.trailers())
			hasTrailers := c.eos && len(tr) > 0
			if len(c.data) > 0 || (c.eos && !hasTrailers) {
				if !f.sendBody(d, c.data, c.eos && !hasTrailers) {
					return
				}
			}
			if hasTrailers {
				if _, _, ts := f.modes(d); ts {
					tm := &headerMap{}
					addSorted(tm, tr)
					f.sendTrailers(d, tm)
				}
			}
			if c.eos {
				return
			}
		}
	}()
	return done
}

func (f *filter) sendBody(d *direction, data []byte, eos bool) bool {
	return f.send(d, kBody, func(m *extprocv3.ProcessingRequest) {
		b := &extprocv3.HttpBody{Body: data, EndOfStream: eos}
		if d.isReq {
			m.Request = &extprocv3.ProcessingRequest_RequestBody{RequestBody: b}
		} else {
			m.Request = &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: b}
		}
	})
}

func (f *filter) sendTrailers(d *direction, tm *headerMap) bool {
	return f.send(d, kTrailers, func(m *extprocv3.ProcessingRequest) {
		ht := &extprocv3.HttpTrailers{Trailers: tm.proto()}
		if d.isReq {
			m.Request = &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: ht}
		} else {
			m.Request = &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: ht}
		}
	})
}

// duplexReader yields what the processor streams back, in order, until
// its end_of_stream or its trailers reply.
type duplexReader struct {
	f   *filter
	d   *direction
	in  bodyIn
	buf []byte
	err error
}

var errDownstreamGone = errors.New("envoy: downstream request ended")

// errGone is awaitDuplex's answer when the downstream request ended.
var errGone = &terminal{kind: "downstream_gone"}

func (r *duplexReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		m, t := r.next()
		switch {
		case r.err != nil:
		case t == passThrough || (t != nil && t.cont):
			// The processor is gone but the request goes on; what was
			// streamed to it is lost, as in Envoy.
			r.finish(false)
		case t != nil:
			r.err = t
		default:
			r.take(m)
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *duplexReader) next() (*extprocv3.ProcessingResponse, *terminal) {
	m, t := r.f.awaitDuplex(r.d, r.f.r.Context().Done())
	if t == errGone {
		r.err = errDownstreamGone
		return nil, nil
	}
	return m, t
}

// take applies one streamed reply.
func (r *duplexReader) take(m *extprocv3.ProcessingResponse) {
	var body *extprocv3.BodyResponse
	var trailers *extprocv3.TrailersResponse
	if r.d.isReq {
		body, trailers = m.GetRequestBody(), m.GetRequestTrailers()
	} else {
		body, trailers = m.GetResponseBody(), m.GetResponseTrailers()
	}
	if trailers != nil {
		tm := &headerMap{}
		addSorted(tm, nonEmpty(r.in.trailers()))
		if err := applyHeaderMutation(tm, trailers.GetHeaderMutation(), r.f.mctx(false, false, false)); err != nil {
			r.err = r.f.mutationFailed(err)
			return
		}
		for k := range r.in.out {
			delete(r.in.out, k)
		}
		for _, e := range tm.h {
			k := http.CanonicalHeaderKey(e.k)
			r.in.out[k] = append(r.in.out[k], e.v)
		}
		r.finish(true)
		return
	}
	sr := body.GetResponse().GetBodyMutation().GetStreamedResponse()
	r.buf = append(r.buf, sr.GetBody()...)
	if sr.GetEndOfStream() {
		r.finish(false)
	}
}

// finish ends the body; trailers are the mutated ones, or the source's.
func (r *duplexReader) finish(trailersDone bool) {
	if !trailersDone {
		copyTrailers(r.in.out, r.in.trailers())
	}
	r.err = io.EOF
	r.f.setFinished(r.d)
	r.f.mu.Lock()
	r.f.idleCheckLocked()
	r.f.mu.Unlock()
}

// duplexBody starts the FULL_DUPLEX_STREAMED pump if the headers phase did
// not (headers SKIP, or a mode_override into FULL_DUPLEX_STREAMED) and
// returns the reader of what the processor streams back.
func (f *filter) duplexBody(d *direction, in bodyIn) io.Reader {
	if in.duplex == nil {
		if in.raw == nil {
			in.raw = readChunks(in.src, f.done)
		}
		in.duplex = f.startDuplex(d, in)
	}
	return &duplexReader{f: f, d: d, in: in}
}
