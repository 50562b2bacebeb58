package serverless_test

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sidecall/sidecall/envoy/envoytest"
)

// End-to-end tests of pre-function / post-function and the PDK: a real
// sidecall processor on a gRPC port, the envoy stand-in in front of the
// Echo upstream, real HTTP requests. What the upstream received is read
// from the Echo answer; what the client received from the HTTP response.

const pdkConfig = `_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: headers
        paths: ["/headers"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  kong.service.request.set_header("X-Set", "v1")
                  kong.service.request.add_header("X-Add", "a")
                  kong.service.request.add_header("X-Add", "b")
                  kong.service.request.clear_header("X-Drop")
                  kong.service.request.set_header("X-Num", 42)
                  kong.service.request.set_headers({ ["X-Many"] = { "m1", "m2" }, ["X-One"] = "o" })
      - name: reads
        paths: ["/reads"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  local r = kong.request
                  kong.service.request.set_header("X-Seen", table.concat({
                    r.get_method(), r.get_scheme(), r.get_host(), r.get_path(), r.get_raw_query(),
                    r.get_path_with_query(), r.get_query_arg("q") or "-", r.get_header("X-In") or "-",
                    tostring(#(r.get_query().list or {})), ngx.var.request_uri,
                  }, "|"))
      - name: path
        paths: ["/path"]
        plugins:
          - name: pre-function
            config:
              access:
                - kong.service.request.set_path("/rewritten/p")
                - kong.service.request.set_query({ b = "2", a = { "x", "y z" }, flag = true })
      - name: rawquery
        paths: ["/rawquery"]
        strip_path: false
        plugins:
          - name: pre-function
            config:
              access:
                - kong.service.request.set_raw_query("z=1&y=%20two")
      - name: method
        paths: ["/method"]
        plugins:
          - name: pre-function
            config:
              access:
                - kong.service.request.set_method("PUT")
      - name: exit
        paths: ["/exit"]
        plugins:
          - name: pre-function
            config:
              access:
                - kong.response.set_header("X-Early", "set-before-exit")
                - |
                  if not kong.request.get_header("X-Key") then
                    return kong.response.exit(403, { message = "no key", codes = { 1, 2 }, ok = false },
                      { ["X-Reason"] = "missing-key", ["X-Multi"] = { "m1", "m2" } })
                  end
                - kong.service.request.set_header("X-Passed", "yes")
          - name: post-function
            config:
              header_filter:
                - kong.response.set_header("X-Post-Saw", tostring(kong.response.get_status()))
      - name: exit-string
        paths: ["/exit-string"]
        plugins:
          - name: pre-function
            config:
              access:
                - return kong.response.exit(418, "short and stout", { ["Content-Type"] = "text/plain" })
      - name: rawbody
        paths: ["/rawbody"]
        plugins:
          - name: pre-function
            config:
              access:
                - kong.service.request.set_raw_body("replaced-body")
      - name: setbody
        paths: ["/setbody"]
        plugins:
          - name: pre-function
            config:
              access:
                - kong.service.request.set_body({ a = 1, b = { "x", "y" }, c = { d = true } })
      - name: setform
        paths: ["/setform"]
        plugins:
          - name: pre-function
            config:
              access:
                - kong.service.request.set_body({ b = "2", a = "x y" }, "application/x-www-form-urlencoded")
      - name: getbody
        paths: ["/getbody"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  local body, err, mime = kong.request.get_body()
                  kong.service.request.set_header("X-Name", body.name)
                  kong.service.request.set_header("X-Mime", mime)
                  kong.service.request.set_header("X-Raw-Len", #kong.request.get_raw_body())
                  body.name = string.upper(body.name)
                  kong.service.request.set_body(body)
      - name: shared
        paths: ["/shared"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  kong.ctx.shared.user = { name = "ann", roles = { "a", "b" } }
                  kong.ctx.shared.n = 42
          - name: correlation-id
            config: {header_name: X-Correlation-ID, generator: uuid}
          - name: post-function
            config:
              access:
                - |
                  local s = kong.ctx.shared
                  kong.service.request.set_header("X-From-Pre", s.user.name .. ":" .. s.user.roles[2] .. ":" .. s.n)
                  kong.service.request.set_header("X-Corr-Seen", s.correlation_id)
                  s.seen_in_access = "yes"
              header_filter:
                - |
                  local s = kong.ctx.shared
                  kong.response.set_header("X-Shared-User", s.user.name .. "/" .. table.concat(s.user.roles, ","))
                  kong.response.set_header("X-Shared-Corr", s.correlation_id)
                  kong.response.set_header("X-Shared-Access", s.seen_in_access)
      - name: early-response-header
        paths: ["/early"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  kong.response.set_header("X-Early", "from-access")
                  kong.response.add_header("X-Early-Add", "1")
                  kong.response.add_header("X-Early-Add", "2")
                  kong.response.clear_header("X-Upstream")
      - name: status
        paths: ["/status"]
        strip_path: false
        plugins:
          - name: post-function
            config:
              header_filter:
                - |
                  kong.response.set_header("X-Upstream-Was", kong.response.get_status() .. " " .. kong.response.get_header("X-Upstream"))
                  kong.response.set_status(201)
      - name: header-filter-exit
        paths: ["/hf-exit"]
        plugins:
          - name: post-function
            config:
              header_filter:
                - |
                  if kong.response.get_header("X-Upstream") == "echo" then
                    return kong.response.exit(502, nil, { ["X-Why"] = "upstream refused by header_filter" })
                  end
      - name: rawbody-read
        paths: ["/rawbody-read"]
        plugins:
          - name: pre-function
            config:
              access:
                - |
                  local raw = kong.request.get_raw_body()
                  kong.service.request.set_header("X-Raw-Len", #raw)
      - name: bodyfilter
        paths: ["/bodyfilter"]
        strip_path: false
        plugins:
          - name: post-function
            config:
              header_filter:
                - kong.response.set_header("X-Header-Filter", "ran")
              body_filter:
                - |
                  local echoed = cjson.decode(kong.response.get_raw_body())
                  kong.response.set_raw_body(cjson.encode({ rewritten = true, path = echoed.path, method = echoed.method }))
`

func pdkHarness(t *testing.T) *envoytest.Harness {
	t.Helper()
	return envoytest.Start(t, pdkConfig, envoytest.Options{})
}

func mustStatus(t *testing.T, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, want, body)
	}
}

func TestE2EPDKRequestHeaders(t *testing.T) {
	h := pdkHarness(t)
	resp, body := h.Get(t, "/headers", "X-Set", "old", "X-Add", "c", "X-Drop", "gone", "X-Keep", "k")
	mustStatus(t, resp, body, 200)
	e := envoytest.DecodeEcho(t, body)
	want := map[string][]string{
		"X-Set":  {"v1"},
		"X-Add":  {"c", "a", "b"},
		"X-Num":  {"42"},
		"X-Many": {"m1", "m2"},
		"X-One":  {"o"},
		"X-Keep": {"k"},
	}
	for k, v := range want {
		if got := e.Headers[k]; strings.Join(got, ",") != strings.Join(v, ",") {
			t.Errorf("upstream %s = %q, want %q", k, got, v)
		}
	}
	if _, ok := e.Headers["X-Drop"]; ok {
		t.Errorf("X-Drop reached the upstream: %v", e.Headers["X-Drop"])
	}
}

func TestE2EPDKRequestReads(t *testing.T) {
	h := pdkHarness(t)
	resp, body := h.Get(t, "/reads?q=one&list=1&list=2", "X-In", "in-value")
	mustStatus(t, resp, body, 200)
	host := strings.TrimPrefix(h.URL, "http://")
	host = host[:strings.LastIndex(host, ":")]
	want := strings.Join([]string{"GET", "http", host, "/reads", "q=one&list=1&list=2",
		"/reads?q=one&list=1&list=2", "one", "in-value", "2", "/reads?q=one&list=1&list=2"}, "|")
	if got := envoytest.DecodeEcho(t, body).Header("X-Seen"); got != want {
		t.Errorf("request reads:\n got %q\nwant %q", got, want)
	}
}

func TestE2EPDKPathAndQueryRewrite(t *testing.T) {
	h := pdkHarness(t)
	t.Run("set_path and set_query", func(t *testing.T) {
		resp, body := h.Get(t, "/path/old?dropped=1")
		mustStatus(t, resp, body, 200)
		e := envoytest.DecodeEcho(t, body)
		if e.Path != "/rewritten/p" {
			t.Errorf("upstream path %q", e.Path)
		}
		// Kong's encode_args: sorted keys, repeated keys for lists, a bare
		// key for true, spaces as %20.
		if e.Query != "a=x&a=y%20z&b=2&flag" {
			t.Errorf("upstream query %q", e.Query)
		}
	})
	t.Run("set_raw_query", func(t *testing.T) {
		resp, body := h.Get(t, "/rawquery?old=1")
		mustStatus(t, resp, body, 200)
		e := envoytest.DecodeEcho(t, body)
		if e.Path != "/rawquery" || e.Query != "z=1&y=%20two" {
			t.Errorf("upstream got path %q query %q", e.Path, e.Query)
		}
	})
	t.Run("set_method", func(t *testing.T) {
		resp, body := h.Get(t, "/method")
		mustStatus(t, resp, body, 200)
		if m := envoytest.DecodeEcho(t, body).Method; m != "PUT" {
			t.Errorf("upstream method %q", m)
		}
	})
}

func TestE2EPDKResponseExit(t *testing.T) {
	h := pdkHarness(t)
	t.Run("table body", func(t *testing.T) {
		resp, body := h.Get(t, "/exit")
		mustStatus(t, resp, body, 403)
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("content-type %q", ct)
		}
		var got map[string]any
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("body is not JSON: %v: %s", err, body)
		}
		if string(body) != `{"codes":[1,2],"message":"no key","ok":false}` {
			t.Errorf("body %s", body)
		}
		if resp.Header.Get("X-Reason") != "missing-key" || strings.Join(resp.Header.Values("X-Multi"), ",") != "m1,m2" {
			t.Errorf("exit headers: %v", resp.Header)
		}
		// kong.response.set_header before the exit applies to the reply;
		// post-function's header_filter runs on the local reply (as in Kong).
		if resp.Header.Get("X-Early") != "set-before-exit" || resp.Header.Get("X-Post-Saw") != "403" {
			t.Errorf("headers from access / header_filter: %v", resp.Header)
		}
		if resp.Header.Get("X-Upstream") != "" {
			t.Error("the upstream answered an exited request")
		}
		if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
			t.Errorf("content-length %q for %d bytes", cl, len(body))
		}
	})
	t.Run("continues when the header is there", func(t *testing.T) {
		resp, body := h.Get(t, "/exit", "X-Key", "k")
		mustStatus(t, resp, body, 200)
		if envoytest.DecodeEcho(t, body).Header("X-Passed") != "yes" {
			t.Error("the chunk after the exit check did not run")
		}
		if resp.Header.Get("X-Early") != "set-before-exit" || resp.Header.Get("X-Post-Saw") != "200" {
			t.Errorf("response headers: %v", resp.Header)
		}
	})
	t.Run("string body", func(t *testing.T) {
		resp, body := h.Get(t, "/exit-string")
		mustStatus(t, resp, body, 418)
		if string(body) != "short and stout" || resp.Header.Get("Content-Type") != "text/plain" {
			t.Errorf("got %q %q", resp.Header.Get("Content-Type"), body)
		}
	})
}

func TestE2EPDKBodyReplacement(t *testing.T) {
	h := pdkHarness(t)
	check := func(t *testing.T, e envoytest.Echoed, want string) {
		t.Helper()
		if e.Body != want {
			t.Errorf("upstream body %q, want %q", e.Body, want)
		}
		if cl := e.Header("Content-Length"); cl != strconv.Itoa(len(want)) {
			t.Errorf("upstream content-length %q for a %d-byte body (headers %v)", cl, len(want), e.Headers)
		}
		if te := e.Header("Transfer-Encoding"); te != "" {
			t.Errorf("upstream transfer-encoding %q", te)
		}
	}
	t.Run("set_raw_body on a POST", func(t *testing.T) {
		resp, body := h.Do(t, h.Request(t, "POST", "/rawbody", "the original, longer client body", "Content-Type", "text/plain"))
		mustStatus(t, resp, body, 200)
		check(t, envoytest.DecodeEcho(t, body), "replaced-body")
	})
	t.Run("set_raw_body on a GET adds a body", func(t *testing.T) {
		// No client body to buffer: the body goes out with the request
		// headers reply (CONTINUE_AND_REPLACE), where Envoy drops
		// content-length and the upstream reads a chunked body.
		resp, body := h.Get(t, "/rawbody")
		mustStatus(t, resp, body, 200)
		if e := envoytest.DecodeEcho(t, body); e.Body != "replaced-body" || e.Method != "GET" {
			t.Errorf("upstream got %s %q", e.Method, e.Body)
		}
	})
	t.Run("set_body on a JSON POST", func(t *testing.T) {
		resp, body := h.Do(t, h.Request(t, "POST", "/setbody", `{"orig":1}`, "Content-Type", "application/json"))
		mustStatus(t, resp, body, 200)
		check(t, envoytest.DecodeEcho(t, body), `{"a":1,"b":["x","y"],"c":{"d":true}}`)
	})
	t.Run("set_body with a mime type", func(t *testing.T) {
		resp, body := h.Do(t, h.Request(t, "POST", "/setform", `{"orig":1}`, "Content-Type", "application/json"))
		mustStatus(t, resp, body, 200)
		e := envoytest.DecodeEcho(t, body)
		check(t, e, "a=x%20y&b=2")
		if ct := e.Header("Content-Type"); ct != "application/x-www-form-urlencoded" {
			t.Errorf("upstream content-type %q", ct)
		}
	})
	t.Run("get_body then set_body", func(t *testing.T) {
		resp, body := h.Do(t, h.Request(t, "POST", "/getbody", `{"name":"zoe","n":1}`, "Content-Type", "application/json"))
		mustStatus(t, resp, body, 200)
		e := envoytest.DecodeEcho(t, body)
		if e.Header("X-Name") != "zoe" || e.Header("X-Mime") != "application/json" || e.Header("X-Raw-Len") != "20" {
			t.Errorf("get_body: headers %v", e.Headers)
		}
		check(t, e, `{"n":1,"name":"ZOE"}`)
	})
}

func TestE2EPDKRequestBodyIsAskedForOnlyWhenRead(t *testing.T) {
	h := pdkHarness(t)
	resp, body, tr := h.DoTraced(t, h.Request(t, "POST", "/headers", `{"a":1}`, "Content-Type", "application/json"))
	mustStatus(t, resp, body, 200)
	if k := strings.Join(tr.SentKinds(), ","); k != "request_headers" {
		t.Errorf("route without get_body: messages %s", k)
	}
	if e := envoytest.DecodeEcho(t, body); e.Body != `{"a":1}` {
		t.Errorf("body not passed through: %q", e.Body)
	}
	resp, body, tr = h.DoTraced(t, h.Request(t, "POST", "/getbody", `{"name":"a"}`, "Content-Type", "application/json"))
	mustStatus(t, resp, body, 200)
	if k := strings.Join(tr.SentKinds(), ","); k != "request_headers,request_body" {
		t.Errorf("route with get_body: messages %s", k)
	}
}

func TestE2EPDKSharedAcrossPluginsAndPhases(t *testing.T) {
	h := pdkHarness(t)
	resp, body := h.Get(t, "/shared")
	mustStatus(t, resp, body, 200)
	e := envoytest.DecodeEcho(t, body)
	if got := e.Header("X-From-Pre"); got != "ann:b:42" {
		t.Errorf("post-function access read %q from pre-function's shared", got)
	}
	corr := e.Header("X-Correlation-ID")
	if corr == "" || e.Header("X-Corr-Seen") != corr {
		t.Errorf("correlation-id (Go) wrote %q, post-function read %q", corr, e.Header("X-Corr-Seen"))
	}
	if got := resp.Header.Get("X-Shared-User"); got != "ann/a,b" {
		t.Errorf("post-function header_filter read %q", got)
	}
	if resp.Header.Get("X-Shared-Corr") != corr || resp.Header.Get("X-Shared-Access") != "yes" {
		t.Errorf("header_filter: corr %q (want %q), access %q", resp.Header.Get("X-Shared-Corr"), corr, resp.Header.Get("X-Shared-Access"))
	}
	// kong.ctx.shared is per request.
	_, body2 := h.Get(t, "/shared")
	if c2 := envoytest.DecodeEcho(t, body2).Header("X-Corr-Seen"); c2 == "" || c2 == corr {
		t.Errorf("second request saw correlation id %q (first %q)", c2, corr)
	}
}

// A Go plugin reads what Lua wrote: request-callout renders
// $(shared.user_id) written by pre-function, fills kong.ctx.shared.callouts,
// and post-function reads that.
func TestE2EPDKSharedWithRequestCallout(t *testing.T) {
	users := httptest.NewServer(envoytest.Echo())
	defer users.Close()
	cfg := fmt.Sprintf(`_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: ["/"]
        plugins:
          - name: pre-function
            config:
              access:
                - kong.ctx.shared.user_id = kong.request.get_query_arg("id") .. "-from-lua"
          - name: request-callout
            config:
              callouts:
                - name: who
                  request:
                    url: %s/users
                    headers:
                      custom: {X-User-Id: "$(shared.user_id)"}
                  response:
                    body: {decode: true}
          - name: post-function
            config:
              access:
                - |
                  local c = kong.ctx.shared.callouts.who
                  kong.service.request.set_header("X-Callout-Saw", c.response.body.headers["X-User-Id"][1])
                  kong.service.request.set_header("X-Callout-Status", c.response.status)
`, users.URL)
	h := envoytest.Start(t, cfg, envoytest.Options{})
	resp, body := h.Get(t, "/?id=7")
	mustStatus(t, resp, body, 200)
	e := envoytest.DecodeEcho(t, body)
	if e.Header("X-Callout-Saw") != "7-from-lua" || e.Header("X-Callout-Status") != "200" {
		t.Errorf("upstream headers %v", e.Headers)
	}
}

func TestE2EPDKResponseHeaderSetInAccess(t *testing.T) {
	h := pdkHarness(t)
	resp, body, tr := h.DoTraced(t, h.Request(t, "GET", "/early", ""))
	mustStatus(t, resp, body, 200)
	if resp.Header.Get("X-Early") != "from-access" || strings.Join(resp.Header.Values("X-Early-Add"), ",") != "1,2" {
		t.Errorf("response headers set in access: %v", resp.Header)
	}
	if resp.Header.Get("X-Upstream") != "" {
		t.Errorf("kong.response.clear_header in access did not clear the upstream's header")
	}
	if k := strings.Join(tr.SentKinds(), ","); k != "request_headers,response_headers" {
		t.Errorf("messages %s", k)
	}
}

func TestE2EPDKSetStatusInHeaderFilter(t *testing.T) {
	h := pdkHarness(t)
	resp, body := h.Get(t, "/status")
	mustStatus(t, resp, body, 201)
	if e := envoytest.DecodeEcho(t, body); e.Path != "/status" {
		t.Errorf("upstream path %q", e.Path)
	}
	if got := resp.Header.Get("X-Upstream-Was"); got != "200 echo" {
		t.Errorf("header_filter read status and header %q", got)
	}
}

func TestE2EPDKExitInHeaderFilter(t *testing.T) {
	h := pdkHarness(t)
	resp, body := h.Get(t, "/hf-exit")
	mustStatus(t, resp, body, 502)
	if resp.Header.Get("X-Why") != "upstream refused by header_filter" || len(body) != 0 {
		t.Errorf("headers %v, body %q", resp.Header, body)
	}
	if resp.Header.Get("X-Upstream") != "" {
		t.Errorf("the upstream's headers leaked into the local reply: %v", resp.Header)
	}
}

// Kong's kong.request.get_raw_body returns "" for a request without a
// body; the processor knows the body is empty when the request headers
// end the stream.
func TestE2EPDKRawBodyOfABodylessRequest(t *testing.T) {
	h := pdkHarness(t)
	resp, body := h.Get(t, "/rawbody-read")
	mustStatus(t, resp, body, 200)
	if got := envoytest.DecodeEcho(t, body).Header("X-Raw-Len"); got != "0" {
		t.Errorf("X-Raw-Len %q", got)
	}
	resp, body = h.Do(t, h.Request(t, "POST", "/rawbody-read", "12345"))
	mustStatus(t, resp, body, 200)
	if got := envoytest.DecodeEcho(t, body).Header("X-Raw-Len"); got != "5" {
		t.Errorf("with a body: X-Raw-Len %q", got)
	}
}

func TestE2EPDKBodyFilter(t *testing.T) {
	h := pdkHarness(t)
	resp, body, tr := h.DoTraced(t, h.Request(t, "POST", "/bodyfilter/x", "client body"))
	mustStatus(t, resp, body, 200)
	want := `{"method":"POST","path":"/bodyfilter/x","rewritten":true}`
	if string(body) != want {
		t.Errorf("client body %s, want %s", body, want)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(want)) {
		t.Errorf("client content-length %q for %d bytes", cl, len(want))
	}
	if resp.Header.Get("X-Header-Filter") != "ran" {
		t.Errorf("header_filter did not run: %v", resp.Header)
	}
	if k := strings.Join(tr.SentKinds(), ","); k != "request_headers,response_headers,response_body" {
		t.Errorf("messages %s", k)
	}
}

// --- the sandbox, end to end ---

func metricValue(t *testing.T, h *envoytest.Harness, name string) float64 {
	t.Helper()
	mfs, err := h.Metrics.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			sum := 0.0
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// Written so the load-time checks cannot see them (those refuse io.open(...)
// and the like at load): the sandbox must refuse them when they run.
func TestE2ESandbox(t *testing.T) {
	cases := []struct {
		name, chunk string
		timeout     bool // stopped by the time limit, else refused (a Lua error)
	}{
		{"os.execute", `os.execute("touch /tmp/sidecall-pwned")`, false},
		{"io.open", `local lib = io lib.open("/etc/passwd")`, false},
		{"require os", `local name = "os" local os = require(name) os.execute("id")`, false},
		{"load", `local f = load f("return 1")()`, false},
		{"loadstring", `local f = loadstring f("return 1")()`, false},
		{"dofile", `local f = dofile f("/etc/passwd")`, false},
		{"debug", `local d = debug d.getinfo(1)`, false},
		{"string.rep bomb", `local s = string.rep("x", 1e9)`, false},
		{"concatenation bomb", `local s = "x" while true do s = s .. s .. s .. s end`, false},
		{"infinite loop", `while true do end`, true},
		{"tail-call loop", `local function f(n) return f(n + 1) end return f(1)`, true},
		{"tail-call loop in pcall", `local function f(n) return f(n + 1) end pcall(f, 1)`, true},
		{"pcall cannot swallow the limit", `while true do pcall(function() while true do end end) end`, true},
		{"table bomb", `local t = {} local i = 0 while true do i = i + 1 t[i] = { i, i, i } end`, true},
	}
	var b strings.Builder
	b.WriteString("_format_version: \"3.0\"\nservices:\n  - name: app\n    url: http://127.0.0.1:1\n    routes:\n")
	b.WriteString("      - name: ok\n        paths: [\"/ok\"]\n        plugins:\n          - name: pre-function\n            config:\n              access: [\"kong.service.request.set_header('X-Lua', 'fine')\"]\n")
	for i, c := range cases {
		q, _ := json.Marshal(c.chunk)
		fmt.Fprintf(&b, "      - name: bad%d\n        paths: [\"/bad%d\"]\n        plugins:\n          - name: pre-function\n            config:\n              access: [%s]\n", i, i, q)
	}
	h := envoytest.Start(t, b.String(), envoytest.Options{})
	limit := h.Lua.Sandbox.Options().Timeout

	var ms runtime.MemStats
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			errs0, tos0 := metricValue(t, h, "sidecall_lua_errors_total"), metricValue(t, h, "sidecall_lua_timeouts_total")
			start := time.Now()
			resp, body := h.Get(t, fmt.Sprintf("/bad%d", i), "X-Request-Id", fmt.Sprintf("req-%d", i))
			took := time.Since(start)
			mustStatus(t, resp, body, 500)
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content-type %q", ct)
			}
			var e struct {
				Message   string `json:"message"`
				RequestID string `json:"request_id"`
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Message == "" || e.RequestID != fmt.Sprintf("req-%d", i) {
				t.Errorf("error body %s (%v)", body, err)
			}
			if strings.Contains(string(body), "lua") || strings.Contains(string(body), "/etc") {
				t.Errorf("the error body leaks details: %s", body)
			}
			// Refused at once, or stopped by the time limit or the
			// instruction budget (the counters below say which). The wall
			// clock only catches a runaway: -race on a busy 2-core CI
			// machine can stretch a 100 ms limit well past 2x.
			if max := 10 * limit; took > max {
				t.Errorf("took %s (limit %s)", took, limit)
			}
			errs, tos := metricValue(t, h, "sidecall_lua_errors_total")-errs0, metricValue(t, h, "sidecall_lua_timeouts_total")-tos0
			t.Logf("%s: %d in %s (lua errors +%v, timeouts +%v)", c.name, resp.StatusCode, took.Round(time.Millisecond), errs, tos)
			if c.timeout && (tos != 1 || errs != 0) {
				t.Errorf("want a timeout: lua errors +%v, timeouts +%v (took %s)", errs, tos, took)
			}
			if !c.timeout && (errs != 1 || tos != 0) {
				t.Errorf("want it refused: lua errors +%v, timeouts +%v (took %s)", errs, tos, took)
			}
			// The next request on the same harness works.
			resp, body = h.Get(t, "/ok")
			mustStatus(t, resp, body, 200)
			if envoytest.DecodeEcho(t, body).Header("X-Lua") != "fine" {
				t.Error("the next request's chunk did not run")
			}
		})
	}
	// The process stays healthy: the bombs' memory is gone after a GC.
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > 512<<20 {
		t.Errorf("heap %d MiB after the bombs", ms.HeapAlloc>>20)
	}
}

// A Lua syntax error in a chunk is a config error with the field path and
// the Lua line; the harness's last good config keeps serving.
func TestE2ELuaSyntaxErrorIsAConfigError(t *testing.T) {
	h := pdkHarness(t)
	err := h.Reload(`_format_version: "3.0"
services:
  - name: app
    url: http://127.0.0.1:1
    routes:
      - name: r
        paths: ["/"]
        plugins:
          - name: post-function
            config:
              header_filter:
                - "local ok = 1"
                - "local a = 1\nlocal b = = 2"
`)
	if err == nil || !strings.Contains(err.Error(), "header_filter[1]") || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("reload error: %v", err)
	}
	resp, body := h.Get(t, "/headers")
	mustStatus(t, resp, body, 200)
	if envoytest.DecodeEcho(t, body).Header("X-Set") != "v1" {
		t.Error("the last good config stopped serving")
	}
}

// examples/pre-function.yaml, run end to end as shipped (the stand-in
// forwards to the Echo upstream instead of the example's URL).
func TestE2EPreFunctionExample(t *testing.T) {
	src, err := os.ReadFile("../examples/pre-function.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h := envoytest.Start(t, string(src), envoytest.Options{})
	resp, body := h.Get(t, "/api/orders")
	mustStatus(t, resp, body, 403)
	if string(body) != `{"message":"missing X-Api-Key"}` || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Errorf("denied: %q %s", resp.Header.Get("Content-Type"), body)
	}
	if resp.Header.Get("X-Served-By") != "sidecall" {
		t.Errorf("post-function did not run on the local reply: %v", resp.Header)
	}
	resp, body = h.Get(t, "/api/orders?page=2", "X-Api-Key", "k1")
	mustStatus(t, resp, body, 200)
	e := envoytest.DecodeEcho(t, body)
	if sum := md5.Sum([]byte("k1")); e.Header("X-Client-Key-Hash") != hex.EncodeToString(sum[:]) || e.Header("X-Gateway") != "sidecall" {
		t.Errorf("upstream headers %v", e.Headers)
	}
	if e.Path != "/" || e.Query != "page=2" || e.Header("X-Api-Key") != "k1" { // strip_path: Kong's default
		t.Errorf("upstream got %s?%s", e.Path, e.Query)
	}
	if resp.Header.Get("X-Served-By") != "sidecall" {
		t.Errorf("response headers %v", resp.Header)
	}
	if ms, err := strconv.Atoi(resp.Header.Get("X-Gateway-Time")); err != nil || ms < 0 || ms > 5000 {
		t.Errorf("X-Gateway-Time %q", resp.Header.Get("X-Gateway-Time"))
	}
}
