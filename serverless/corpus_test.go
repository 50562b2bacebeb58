package serverless

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sidecall/sidecall/flows"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"gopkg.in/yaml.v3"
)

// The Lua corpus: snippets written the way Kong's docs, its pre-function
// examples and its bundled plugins write Lua, each run through
// pre-function on one request with an effect checked. A file's
// "-- @phase NAME" lines start the chunk of that phase.

const corpusBody = `{"user":"ann","amount":10}`

func corpusExchange(t *testing.T) (*flows.Exchange, *observer.ObservedLogs) {
	core, logs := observer.New(zap.DebugLevel)
	x := flows.NewExchange("req-1", flows.Request{
		Method: "POST", Scheme: "https", Authority: "api.example.com", Path: "/orders/42", RawQuery: "page=2&tag=a&tag=b",
		Headers: flows.Headers{
			"content-type":     {"application/json"},
			"authorization":    {"Bearer tok123"},
			"x-forwarded-for":  {"203.0.113.7, 10.0.0.1"},
			"cookie":           {"session=abc123; theme=dark"},
			"x-api-key":        {"k1"},
			"user-agent":       {"curl/8.0"},
			"x-jwt":            {"aaa.eyJzdWIiOiJhbm4ifQ.bbb"},
			"x-force-redirect": {"1"},
		},
		Body: []byte(corpusBody), HasBody: true,
	}, zap.New(core))
	x.Attributes = map[string]string{"source.address": "10.1.2.3:5555", "destination.address": "10.9.9.9:8080"}
	u, _ := url.Parse("http://orders.internal:8080/api")
	svc := &flows.Service{Name: "orders-svc", URL: u, Config: &flows.ServiceConfig{Name: "orders-svc"}}
	x.Route = &flows.Route{Name: "orders", Service: svc, Config: &flows.RouteConfig{Name: "orders", Paths: []string{"/orders"}}}
	return x, logs
}

type corpusRun struct {
	p    *serverless
	x    *flows.Exchange
	logs *observer.ObservedLogs
	errs []error
}

func reqHeader(r *corpusRun, name string) string { return r.x.Request.Headers.Get(name) }

// corpusWant checks each snippet's effect.
var corpusWant = map[string]func(r *corpusRun) bool{
	"01_query_to_header": func(r *corpusRun) bool { return reqHeader(r, "x-page") == "2" },
	"02_require_apikey": func(r *corpusRun) bool {
		return r.x.Reply != nil && r.x.Reply.Status == 401 && string(r.x.Reply.Body) == `{"message":"Missing API key"}`
	},
	"03_client_ip":     func(r *corpusRun) bool { return reqHeader(r, "x-client-ip") == "10.1.2.3" },
	"04_forwarded_ip":  func(r *corpusRun) bool { return reqHeader(r, "x-real-ip") == "203.0.113.7" },
	"05_original_host": func(r *corpusRun) bool { return reqHeader(r, "x-original-host") == "api.example.com|api.example.com" },
	"06_rewrite_host": func(r *corpusRun) bool {
		return reqHeader(r, "host") == "internal.svc.cluster.local" && slices.Contains(r.x.Changes().RequestHeaders, "host")
	},
	"07_ngx_req_headers": func(r *corpusRun) bool {
		return reqHeader(r, "x-is-curl") == "yes" && !r.x.Request.Headers.Has("cookie")
	},
	"08_ngx_var_uri": func(r *corpusRun) bool {
		return reqHeader(r, "x-uri") == "/orders/42|/orders/42?page=2&tag=a&tag=b|page=2&tag=a&tag=b"
	},
	"09_ngx_var_cookie":   func(r *corpusRun) bool { return reqHeader(r, "x-session") == "abc123" },
	"10_ngx_var_http_arg": func(r *corpusRun) bool { return reqHeader(r, "x-key-copy") == "k1/2" },
	"11_upstream_uri": func(r *corpusRun) bool {
		return r.x.Request.Path == "/v2/orders/42" && r.x.Request.RawQuery == "page=2&tag=a&tag=b"
	},
	"12_ngx_var_args":    func(r *corpusRun) bool { return r.x.Request.RawQuery == "page=3" },
	"13_ngx_ctx_phases":  func(r *corpusRun) bool { return r.x.Response.Headers.Get("x-ctx") == "yes" },
	"14_kong_ctx_plugin": func(r *corpusRun) bool { return r.x.Response.Headers.Get("x-plugin-ctx") == "from-access" },
	"15_teapot_say":      func(r *corpusRun) bool { return replyIs(r, 418, "I'm a teapot\n", "text/plain") },
	"16_say_json":        func(r *corpusRun) bool { return replyIs(r, 200, "{\"ok\":true}\n", "application/json") },
	"17_ip_allow":        func(r *corpusRun) bool { return r.x.Reply != nil && r.x.Reply.Status == 403 },
	"18_response_error": func(r *corpusRun) bool {
		return replyIs(r, 429, `{"message":"Slow down"}`, "application/json; charset=utf-8") && r.x.Reply.Headers.Get("retry-after") == "10"
	},
	"19_set_headers": func(r *corpusRun) bool {
		h := r.x.Response.Headers
		return h.Get("x-a") == "1" && strings.Join(h.Values("x-b"), ",") == "2,3"
	},
	"20_header_getters": func(r *corpusRun) bool {
		h := r.x.Response.Headers
		return h.Get("x-seen") == "application/json" && h.Get("x-source") == "service"
	},
	"21_ngx_arg_buffer":  func(r *corpusRun) bool { return string(r.x.Response.Body) == strings.ToUpper(corpusResponse) },
	"22_redact_body":     func(r *corpusRun) bool { return string(r.x.Response.Body) == `{"id":1,"items":[1,2]}` },
	"23_return_function": func(r *corpusRun) bool { return reqHeader(r, "x-count") == "1" },
	"24_log_phase": func(r *corpusRun) bool {
		return r.logs.FilterMessage("done status=200 ip=10.1.2.3 uri=/orders/42?page=2&tag=a&tag=b").Len() == 1
	},
	"25_serialize_value": func(r *corpusRun) bool { return reqHeader(r, "x-serialized") == "1" },
	"26_re_match_id":     func(r *corpusRun) bool { return reqHeader(r, "x-order-id") == "42,42" },
	"27_re_gsub_path":    func(r *corpusRun) bool { return r.x.Request.Path == "/api/v1/orders/42" },
	"28_basic_auth_upstream": func(r *corpusRun) bool {
		return reqHeader(r, "authorization") == "Basic "+base64.StdEncoding.EncodeToString([]byte("user:pass"))
	},
	"29_jwt_claims": func(r *corpusRun) bool { return reqHeader(r, "x-sub") == "ann" },
	"30_hmac_signature": func(r *corpusRun) bool {
		m := hmac.New(sha1.New, []byte("secret"))
		m.Write([]byte("/orders/42?page=2&tag=a&tag=b"))
		return reqHeader(r, "x-signature") == base64.StdEncoding.EncodeToString(m.Sum(nil))
	},
	"31_md5_body": func(r *corpusRun) bool {
		sum := md5.Sum([]byte(corpusBody))
		return reqHeader(r, "x-body-md5") == hex.EncodeToString(sum[:]) && r.p.Needs().RequestBody
	},
	"32_time_headers": func(r *corpusRun) bool {
		ok := regexp.MustCompile
		return ok(`^\d{10}$`).MatchString(reqHeader(r, "x-time")) &&
			ok(`^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$`).MatchString(reqHeader(r, "x-http-date")) &&
			ok(`^\d{4}-\d{2}-\d{2}$`).MatchString(reqHeader(r, "x-today")) &&
			ok(`^20\d{2}$`).MatchString(reqHeader(r, "x-year")) && ok(`^\d{13}$`).MatchString(reqHeader(r, "x-now-ms"))
	},
	"33_uri_args_rewrite": func(r *corpusRun) bool {
		q, err := url.ParseQuery(r.x.Request.RawQuery)
		return err == nil && q.Get("extra") == "a b&c" && !q.Has("page") && strings.Join(q["tag"], ",") == "a,b"
	},
	"34_decode_args": func(r *corpusRun) bool { return reqHeader(r, "x-y") == "twoz=a%20b" },
	"35_router_info": func(r *corpusRun) bool {
		return reqHeader(r, "x-route") == "orders" && reqHeader(r, "x-service") == "orders-svc@orders.internal:8080"
	},
	"36_node_info": func(r *corpusRun) bool {
		return regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(reqHeader(r, "x-node")) &&
			reqHeader(r, "x-hostname") != ""
	},
	"37_kong_cache": func(r *corpusRun) bool { return reqHeader(r, "x-conf") == "tenant-a" },
	"38_cjson_safe": func(r *corpusRun) bool { return reqHeader(r, "x-json-err") == "1" },
	"39_enable_buffering": func(r *corpusRun) bool {
		return string(r.x.Response.Body) == "id=1" && r.p.Needs().ResponseBody
	},
	"40_ngx_req_body": func(r *corpusRun) bool {
		return string(r.x.Request.Body) == `{"amount":20,"user":"ann"}` && r.p.Needs().RequestBody
	},
	"41_get_body": func(r *corpusRun) bool { return reqHeader(r, "x-user") == "ann;application/json" },
	"42_path_with_query": func(r *corpusRun) bool {
		return reqHeader(r, "x-full") == "/orders/42?page=2&tag=a&tag=b" && reqHeader(r, "x-fwd") == "https://api.example.com:443"
	},
	"43_client_protocol": func(r *corpusRun) bool { return reqHeader(r, "x-proto") == "https:5555" },
	"44_table_new_clear": func(r *corpusRun) bool { return reqHeader(r, "x-t") == "a,b0" },
	"45_worker_pid":      func(r *corpusRun) bool { return reqHeader(r, "x-pid") == strconv.Itoa(os.Getpid()) },
	"46_anonymous":       func(r *corpusRun) bool { return reqHeader(r, "x-anonymous") == "true" },
	"47_ngx_null":        func(r *corpusRun) bool { return reqHeader(r, "x-null") == "1" },
	"48_ngx_header_filter": func(r *corpusRun) bool {
		h := r.x.Response.Headers
		return !h.Has("content-length") && h.Get("x-powered-by") == "sidecall"
	},
	"49_ngx_status_filter": func(r *corpusRun) bool { return r.x.Response.Status == 202 },
	"51_log_serialize": func(r *corpusRun) bool {
		return r.logs.FilterMessage(`entry {"auth":"REDACTED","route":"orders","status":200,"tenant":"k1"}`).Len() == 1
	},
	"52_phase_resp_headers": func(r *corpusRun) bool { return r.x.Response.Headers.Get("x-upstream-copy") == "u1" },
	"53_subsystem":          func(r *corpusRun) bool { return reqHeader(r, "x-subsystem") == "http" },
	"54_redirect_http": func(r *corpusRun) bool {
		return r.x.Reply != nil && r.x.Reply.Status == 301 && r.x.Reply.Headers.Get("location") == "https://api.example.com/orders/42?page=2&tag=a&tag=b"
	},
	"50_rewrite_phase": func(r *corpusRun) bool { return reqHeader(r, "x-rewrite") == "POST" },
}

const corpusResponse = `{"id":1,"secret":"s","items":[1,2]}`

func replyIs(r *corpusRun, status int, body, ct string) bool {
	return r.x.Reply != nil && r.x.Reply.Status == status && string(r.x.Reply.Body) == body && r.x.Reply.Headers.Get("content-type") == ct
}

// splitPhases cuts a corpus file at its "-- @phase NAME" lines.
func splitPhases(src string) map[string][]string {
	out := map[string][]string{}
	phase, cur := "", []string{}
	flush := func() {
		if phase != "" {
			out[phase] = append(out[phase], strings.Join(cur, "\n"))
		}
	}
	for _, line := range strings.Split(src, "\n") {
		if p, ok := strings.CutPrefix(line, "-- @phase "); ok {
			flush()
			phase, cur = strings.TrimSpace(p), nil
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return out
}

func runCorpus(t *testing.T, name, src string) *corpusRun {
	cfg, err := yaml.Marshal(splitPhases(src))
	if err != nil {
		t.Fatal(err)
	}
	p, b := buildServerless(t, "pre-function", string(cfg))
	if b.Failed() {
		t.Fatalf("%s: %v", name, b.Problems())
	}
	x, logs := corpusExchange(t)
	r := &corpusRun{p: p, x: x, logs: logs}
	ctx := context.Background()
	x.Phase = flows.PhaseAccess
	r.errs = append(r.errs, p.Access(ctx, x))
	x.Response = flows.Response{Status: 200, Headers: flows.Headers{"content-type": {"application/json"}, "content-length": {"35"}, "x-upstream": {"u1"}}}
	x.Phase = flows.PhaseHeaderFilter
	r.errs = append(r.errs, p.HeaderFilter(ctx, x))
	x.Response.Body, x.Response.HasBody = []byte(corpusResponse), true
	x.Phase = flows.PhaseBodyFilter
	r.errs = append(r.errs, p.BodyFilter(ctx, x))
	logRuns.Wait()
	return r
}

func TestLuaCorpus(t *testing.T) {
	files, err := filepath.Glob("testdata/lua_corpus/*.lua")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 35 {
		t.Fatalf("corpus has %d snippets, want at least 35", len(files))
	}
	pass := 0
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".lua")
		want, ok := corpusWant[name]
		if !ok {
			t.Errorf("%s: no expectation", name)
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(name, func(t *testing.T) {
			r := runCorpus(t, name, string(src))
			for _, err := range r.errs {
				if err != nil {
					t.Fatalf("error: %v", err)
				}
			}
			if !want(r) {
				t.Fatalf("effect not seen: request %+v reply %+v response %+v", r.x.Request, r.x.Reply, r.x.Response)
			}
			pass++
		})
	}
	t.Logf("Lua corpus: %d of %d snippets pass", pass, len(files))
}
