package transformer

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
)

// mpart is one part of a multipart/form-data body.
type mpart struct {
	name   string
	header textproto.MIMEHeader
	value  []byte
}

// formData is a multipart/form-data body as Kong's lua-multipart sees it:
// a name stands for the last part that has it.
type formData struct {
	parts    []mpart
	boundary string
}

// parseFormData parses body; ok is false without a boundary or for a
// malformed body (then it is left as it is).
func parseFormData(body []byte, contentType string) (*formData, bool) {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil || params["boundary"] == "" {
		return nil, false
	}
	f := &formData{boundary: params["boundary"]}
	if len(body) == 0 {
		return f, true
	}
	r := multipart.NewReader(bytes.NewReader(body), f.boundary)
	for {
		p, err := r.NextRawPart()
		if err == io.EOF {
			return f, true
		}
		if err != nil {
			return nil, false
		}
		v, err := io.ReadAll(p)
		if err != nil {
			return nil, false
		}
		f.parts = append(f.parts, mpart{name: p.FormName(), header: p.Header, value: v})
	}
}

func (f *formData) index(name string) int {
	for i := len(f.parts) - 1; i >= 0; i-- {
		if f.parts[i].name == name {
			return i
		}
	}
	return -1
}

func (f *formData) get(name string) ([]byte, bool) {
	if i := f.index(name); i >= 0 {
		return f.parts[i].value, true
	}
	return nil, false
}

// setSimple replaces the named part (in place) or appends one, with only
// a Content-Disposition header.
func (f *formData) setSimple(name string, value []byte) {
	p := mpart{name: name, value: value,
		header: textproto.MIMEHeader{"Content-Disposition": {`form-data; name="` + name + `"`}}}
	if i := f.index(name); i >= 0 {
		f.parts[i] = p
		return
	}
	f.parts = append(f.parts, p)
}

func (f *formData) del(name string) {
	if i := f.index(name); i >= 0 {
		f.parts = append(f.parts[:i], f.parts[i+1:]...)
	}
}

// encode writes the parts with the body's boundary; no parts is an empty
// body, as lua-multipart gives.
func (f *formData) encode() ([]byte, bool) {
	if len(f.parts) == 0 {
		return []byte{}, true
	}
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	if w.SetBoundary(f.boundary) != nil {
		return nil, false
	}
	for _, p := range f.parts {
		pw, err := w.CreatePart(p.header)
		if err != nil {
			return nil, false
		}
		_, _ = pw.Write(p.value)
	}
	if w.Close() != nil {
		return nil, false
	}
	return b.Bytes(), true
}
