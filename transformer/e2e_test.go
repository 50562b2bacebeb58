package transformer_test

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/sidecall/sidecall/envoy/envoytest"
)

// End-to-end: a real sidecall processor behind the envoy stand-in, real
// HTTP requests to a real upstream on 127.0.0.1. What the upstream got is
// read from the Echo answer or a Recorder; what the client got from the
// response.

// The docs route's plugin is Kong's request-transformer docs example
// ("Basic configuration examples"), as decK writes it.
const requestConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: docs
        paths: ["/docs"]
        plugins:
          - name: request-transformer
            config:
              remove:
                headers:
                  - x-toremove
                  - x-another-one
                querystring:
                  - qs-toremove
                  - qs2-toremove
                body:
                  - formparam-toremove
                  - formparam-another-one
              replace:
                body:
                  - body-param1:new-value-1
                  - body-param2:new-value-2
              rename:
                headers:
                  - header-old-name:header-new-name
                  - another-old-name:another-new-name
                querystring:
                  - qs-old-name:qs-new-name
                  - qs2-old-name:qs2-new-name
                body:
                  - param-old:param-new
                  - param2-old:param2-new
              add:
                headers:
                  - x-new-header:value
                  - x-another-header:something
                querystring:
                  - new-param:some_value
                  - another-param:some_value
                body:
                  - new-form-param:some_value
                  - another-form-param:some_value
      - name: json
        paths: ["~/items/(?<id>\\d+)$"]
        plugins:
          - name: request-transformer
            config:
              http_method: PUT
              replace:
                uri: /v2/items/$(uri_captures.id)
              remove:
                body: [password]
              add:
                headers: ["x-item:$(uri_captures.id)"]
                body: ["source:$(headers['x-client'])", "id:$(uri_captures['id'])"]
              append:
                querystring: ["tag:new"]
      - name: get
        paths: ["/search"]
        plugins:
          - name: request-transformer
            config:
              http_method: GET
`

func TestRequestTransformerEndToEnd(t *testing.T) {
	h := envoytest.Start(t, requestConfig, envoytest.Options{})

	t.Run("kong docs example, form body", func(t *testing.T) {
		form := "formparam-toremove=1&body-param1=old&param-old=v&keep=k&new-form-param=client"
		resp, body := h.Do(t, h.Request(t, "POST", "/docs?qs-toremove=1&qs-old-name=q&keep=1", form,
			"Content-Type", "application/x-www-form-urlencoded", "X-Toremove", "1", "Header-Old-Name", "h",
			"X-New-Header", "client"))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		e := envoytest.DecodeEcho(t, body)
		if e.Header("x-toremove") != "" || e.Header("header-old-name") != "" || e.Header("header-new-name") != "h" {
			t.Errorf("headers %v", e.Headers)
		}
		// add never overrides what the client sent.
		if e.Header("x-new-header") != "client" || e.Header("x-another-header") != "something" {
			t.Errorf("added headers %v", e.Headers)
		}
		if want := "another-param=some_value&keep=1&new-param=some_value&qs-new-name=q"; e.Query != want {
			t.Errorf("query %q, want %q", e.Query, want)
		}
		if want := "another-form-param=some_value&body-param1=new-value-1&keep=k&new-form-param=client&param-new=v"; e.Body != want {
			t.Errorf("body %q, want %q", e.Body, want)
		}
		if e.Header("content-length") != strconv.Itoa(len(e.Body)) {
			t.Errorf("content-length %q for %d bytes", e.Header("content-length"), len(e.Body))
		}
	})

	t.Run("kong docs example, multipart body", func(t *testing.T) {
		var buf bytes.Buffer
		w := multipart.NewWriter(&buf)
		for _, kv := range [][2]string{{"formparam-toremove", "1"}, {"param-old", "v"}, {"body-param1", "old"}, {"keep", "k"}} {
			_ = w.WriteField(kv[0], kv[1])
		}
		_ = w.Close()
		_, body := h.Do(t, h.Request(t, "POST", "/docs", buf.String(), "Content-Type", w.FormDataContentType()))
		e := envoytest.DecodeEcho(t, body)
		r := multipart.NewReader(strings.NewReader(e.Body), w.Boundary())
		var got []string
		for {
			p, err := r.NextPart()
			if err != nil {
				break
			}
			v, _ := io.ReadAll(p)
			got = append(got, p.FormName()+"="+string(v))
		}
		want := "keep=k param-new=v body-param1=new-value-1 new-form-param=some_value another-form-param=some_value"
		if strings.Join(got, " ") != want {
			t.Errorf("parts %q, want %q (body %q)", got, want, e.Body)
		}
	})

	t.Run("json body, method, uri and templates", func(t *testing.T) {
		resp, body := h.Do(t, h.Request(t, "POST", "/items/42?tag=old", `{"name":"n","password":"p","nested":{"a":[1,2]}}`,
			"Content-Type", "application/json", "X-Client", "web"))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		e := envoytest.DecodeEcho(t, body)
		if e.Method != "PUT" || e.Path != "/v2/items/42" || e.Query != "tag=old&tag=new" || e.Header("x-item") != "42" {
			t.Errorf("got %s %s?%s x-item=%q", e.Method, e.Path, e.Query, e.Header("x-item"))
		}
		if want := `{"name":"n","nested":{"a":[1,2]},"source":"web","id":"42"}`; e.Body != want {
			t.Errorf("body %s, want %s", e.Body, want)
		}
	})

	t.Run("GET moves form fields to the query", func(t *testing.T) {
		_, body := h.Do(t, h.Request(t, "POST", "/search?q=1", "q=2&page=3", "Content-Type", "application/x-www-form-urlencoded"))
		e := envoytest.DecodeEcho(t, body)
		if e.Method != "GET" || e.Query != "page=3&q=1&q=2" {
			t.Errorf("got %s ?%s", e.Method, e.Query)
		}
	})
}

// The plugin is Kong's response-transformer docs example (remove, add and
// append of headers and JSON keys), plus replace and rename.
const responseConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: ["/"]
plugins:
  - name: response-transformer
    config:
      remove:
        headers:
          - x-toremove
          - x-another-one
        json:
          - json-key-toremove
          - another-json-key
      add:
        headers:
          - x-new-header:value
          - x-another-header:something
        json:
          - new-json-key:some_value
          - another-json-key:some_value
          - count:7
        json_types: [string, string, number]
      append:
        headers:
          - x-existing-header:some_value
          - x-another-header:some_value
      rename:
        headers: ["x-internal:x-public"]
        json: ["old:new"]
      replace:
        json: ["status:done"]
`

func TestResponseTransformerEndToEnd(t *testing.T) {
	up := envoytest.Record(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Toremove", "1")
		w.Header().Set("X-Existing-Header", "orig")
		w.Header().Set("X-Internal", "i")
		if r.URL.Path == "/text" {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte(`{"json-key-toremove":1}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"json-key-toremove": 1, "another-json-key": "x", "old": "o", "status": "pending"})
	})
	h := envoytest.Start(t, responseConfig, envoytest.Options{Upstream: up.URL})

	resp, body := h.Get(t, "/")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	// json.Encoder sorts the keys; removed, replaced, renamed, added, in that order.
	if want := `{"status":"done","new":"o","new-json-key":"some_value","another-json-key":"some_value","count":7}`; string(body) != want {
		t.Errorf("body %s, want %s", body, want)
	}
	hd := resp.Header
	if hd.Get("X-Toremove") != "" || hd.Get("X-Internal") != "" || hd.Get("X-Public") != "i" || hd.Get("X-New-Header") != "value" {
		t.Errorf("headers %v", hd)
	}
	if got := hd.Values("X-Existing-Header"); len(got) != 2 || got[0] != "orig" || got[1] != "some_value" {
		t.Errorf("x-existing-header %q", got)
	}
	// add then append: the added value and the appended one.
	if got := hd.Values("X-Another-Header"); len(got) != 2 || got[0] != "something" || got[1] != "some_value" {
		t.Errorf("x-another-header %q", got)
	}

	// A body that is not JSON keeps its bytes; headers still change.
	resp, body = h.Get(t, "/text")
	if string(body) != `{"json-key-toremove":1}` || resp.Header.Get("X-New-Header") != "value" {
		t.Errorf("text: %s %v", body, resp.Header)
	}
	if up.Count() != 2 {
		t.Fatalf("%d upstream requests", up.Count())
	}
}
