package flows

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// redactJSON redacts a YAML document and returns it as /config prints it
// (compact, keys sorted, no HTML escaping).
func redactJSON(t *testing.T, src string) string {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(redact(n.Content[0])); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(b.String())
}

// TestRedactHidesSecretsByName: /config hides values by the name they
// stand under (map key, header name, query parameter, "Name: value" line),
// in any case and spelling, passwords in URLs, private keys, and Lua that
// names a secret; vault references, null, booleans and everything else are
// shown as written.
func TestRedactHidesSecretsByName(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		// The three values of the report.
		{"X-Api-Key header", `{custom: {X-Api-Key: abc123}}`, `{"custom":{"X-Api-Key":"<redacted>"}}`},
		{"Api-Token header", `{custom: {Api-Token: abc123}}`, `{"custom":{"Api-Token":"<redacted>"}}`},
		{"api_key in a URL", `{url: "http://h/p?api_key=abc&x=1"}`, `{"url":"http://h/p?api_key=<redacted>&x=1"}`},

		// Names: any case, -, _ or nothing between words, any prefix.
		{"apikey", `{apikey: abc}`, `{"apikey":"<redacted>"}`},
		{"API_KEY", `{API_KEY: abc}`, `{"API_KEY":"<redacted>"}`},
		{"x-auth-token", `{x-auth-token: abc}`, `{"x-auth-token":"<redacted>"}`},
		{"Set-Cookie", `{Set-Cookie: "a=b"}`, `{"Set-Cookie":"<redacted>"}`},
		{"cookie", `{cookie: "a=b"}`, `{"cookie":"<redacted>"}`},
		{"client_secret", `{client_secret: s3cr3t}`, `{"client_secret":"<redacted>"}`},
		{"db-password", `{db-password: hunter2}`, `{"db-password":"<redacted>"}`},
		{"passwd", `{passwd: hunter2}`, `{"passwd":"<redacted>"}`},
		{"Authorization", `{Authorization: "Bearer $(callouts.auth.response.body.token)"}`, `{"Authorization":"<redacted>"}`},
		{"credentials list", `{keyauth_credentials: [{key: k1}, {key: k2}]}`, `{"keyauth_credentials":[{"key":"<redacted>"},{"key":"<redacted>"}]}`},
		{"number under a secret name", `{password: 1234}`, `{"password":"<redacted>"}`},

		// Lists under a secret name: route header matching.
		{"route headers", `{headers: {x-api-key: [abc, def]}}`, `{"headers":{"x-api-key":["<redacted>","<redacted>"]}}`},
		// Kong's "Name: value" header lines.
		{"header lines", `{add: ["Authorization: Bearer abc", "X-Trace: 1", "x-api-key:abc"]}`, `{"add":["Authorization: <redacted>","X-Trace: 1","x-api-key:<redacted>"]}`},

		// URLs: query parameters, userinfo, paths, fragments, encodings.
		{"token in a path URL", `{path: "/p?token=abc"}`, `{"path":"/p?token=<redacted>"}`},
		{"encoded name", `{url: "https://h/?api%5Fkey=abc#frag"}`, `{"url":"https://h/?api%5Fkey=<redacted>#frag"}`},
		{"several", `{url: "http://h/p?a=1&Access-Key=x&access_token=y&b="}`, `{"url":"http://h/p?a=1&Access-Key=<redacted>&access_token=<redacted>&b="}`},
		{"userinfo password", `{url: "redis://user:hunter2@h:6379/0"}`, `{"url":"redis://user:<redacted>@h:6379/0"}`},
		{"userinfo without password", `{url: "http://user@h/p"}`, `{"url":"http://user@h/p"}`},
		{"URL in a list", `{urls: ["http://h/?apikey=1"]}`, `{"urls":["http://h/?apikey=<redacted>"]}`},

		// Vault references stay as written.
		{"vault value", `{client_secret: "{vault://env/SECRET}"}`, `{"client_secret":"{vault://env/SECRET}"}`},
		{"vault in a query", `{url: "http://h/p?token={vault://env/T}"}`, `{"url":"http://h/p?token={vault://env/T}"}`},
		{"vault in userinfo", `{url: "http://u:{vault://env/P}@h/p"}`, `{"url":"http://u:{vault://env/P}@h/p"}`},
		{"vault header line", `{add: ["X-Api-Key: {vault://env/K}"]}`, `{"add":["X-Api-Key: {vault://env/K}"]}`},

		// Private keys wherever they are.
		{"PEM key", "{key: \"-----BEGIN PRIVATE KEY-----\\nMII\\n-----END PRIVATE KEY-----\\n\"}", `{"key":"<redacted>"}`},

		// Lua: as written unless it names a secret.
		{"pre-function naming a secret", `{name: pre-function, config: {access: ["kong.service.request.set_header('X-Api-Key', 'abc')", "kong.log('hi')"]}}`,
			`{"config":{"access":["<lua>","kong.log('hi')"]},"name":"pre-function"}`},
		{"by_lua naming a secret", `{by_lua: "local token = 'abc'"}`, `{"by_lua":"<lua>"}`},
		{"by_lua", `{by_lua: "kong.log('hi')"}`, `{"by_lua":"kong.log('hi')"}`},
		{"other plugin's config is not Lua", `{name: correlation-id, config: {header_name: X-Correlation-ID}}`,
			`{"config":{"header_name":"X-Correlation-ID"},"name":"correlation-id"}`},

		// Shown as written.
		{"null and bool", `{password: null, tokenauth: false}`, `{"password":null,"tokenauth":false}`},
		{"plain fields", `{header_name: X-Correlation-ID, url: "http://h/p?x=1", tags: [password-is-a-tag], retries: 3}`,
			`{"header_name":"X-Correlation-ID","retries":3,"tags":["password-is-a-tag"],"url":"http://h/p?x=1"}`},
		{"header name as a value", `{correlation_header: X-Api-Key}`, `{"correlation_header":"X-Api-Key"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := redactJSON(t, c.in); got != c.want {
				t.Errorf("redact(%s)\n got %s\nwant %s", c.in, got, c.want)
			}
		})
	}
}

// TestRedactedConfigOfALoadedFile: Load keeps the redacted config on the
// snapshot; the secrets of the file appear nowhere in it.
func TestRedactedConfigOfALoadedFile(t *testing.T) {
	s := mustLoad(t, `
services:
  - name: svc
    url: http://user:hunter2@127.0.0.1:1/p?api_key=abc123&x=1
    routes:
      - name: r
        paths: [/]
        headers: {X-Api-Key: [route-secret]}
plugins:
  - name: test-plugin
    config: {tag: "x"}
`)
	b, err := json.Marshal(s.Redacted)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"hunter2", "abc123", "route-secret"} {
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("redacted config shows %q: %s", secret, b)
		}
	}
}
