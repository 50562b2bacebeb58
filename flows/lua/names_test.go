package lua

import (
	"context"
	"errors"
	"os"
	"sort"
	"strings"
	"testing"
)

// TestDocsLuaMatchesTable: docs/lua.md is what the PDK table renders.
// UPDATE_DOCS=1 rewrites it.
func TestDocsLuaMatchesTable(t *testing.T) {
	const path = "../../docs/lua.md"
	want := RenderDocs()
	if os.Getenv("UPDATE_DOCS") != "" {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("docs/lua.md differs from the PDK table (flows/lua/names.go); run UPDATE_DOCS=1 go test ./flows/lua/ -run TestDocsLua")
	}
}

// TestNamesMatchSandbox: the functions reachable under kong and ngx are
// exactly the table's.
func TestNamesMatchSandbox(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	h := newHost()
	err := run(t, sb, `
local out = {}
local function walk(p, t, d)
	for k, v in pairs(t) do
		if type(v) == "function" then out[#out + 1] = p .. "." .. k
		elseif type(v) == "table" and d < 4 then walk(p .. "." .. k, v, d + 1) end
	end
end
walk("kong", kong, 0)
walk("ngx", ngx, 0)
kong.ctx.shared.fns = table.concat(out, " ")
`, h)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(h.shared["fns"].(string))
	sort.Strings(got)
	var want []string
	for _, n := range Names {
		if n.Kind == "function" {
			want = append(want, n.Path)
		}
	}
	sort.Strings(want)
	have := map[string]bool{}
	for _, g := range got {
		have[g] = true
	}
	listed := map[string]bool{}
	for _, w := range want {
		listed[w] = true
		if !have[w] {
			t.Errorf("%s is in the table but not in the sandbox", w)
		}
	}
	for _, g := range got {
		if !listed[g] {
			t.Errorf("%s is in the sandbox but not in the table", g)
		}
	}
	if len(sortedNames()) < 120 {
		t.Errorf("only %d names", len(sortedNames()))
	}
}

func TestUnknownNamesAreLoadErrors(t *testing.T) {
	bad := []struct {
		src, name string
		line      int
	}{
		{`ngx.location.capture("/x")`, "ngx.location.capture", 1},
		{"local a = 1\n\nkong.client.get_ipp()", "kong.client.get_ipp", 3},
		{"local h = kong.request.get_hedaer", "kong.request.get_hedaer", 1},
		{"local d = ngx.shared.cache\nlocal v = ngx.shared.cache:get('k')", "ngx.shared.cache.get", 2},
		{"kong.db.routes:select()", "kong.db.routes.select", 1},
		{"local ok = ngx.sleep(1)", "ngx.sleep", 1},
		{"ngx.req.socket()", "ngx.req.socket", 1},
		{"kong.request()", "kong.request", 1},
	}
	for _, c := range bad {
		_, err := Compile(c.src, "x")
		var ue *UnknownNameError
		if !errors.As(err, &ue) || ue.Name != c.name || ue.Line != c.line {
			t.Errorf("%q: want %s on line %d, got %v", c.src, c.name, c.line, err)
		}
	}
	good := []string{
		`if ngx.config and ngx.config.subsystem == "http" then end`,
		`local kong, ngx = kong, ngx ngx.req.read_body() kong.log.err("x")`,
		`local v = kong.cache:get("k", nil, function() return 1 end)`,
		`ngx.var.upstream_uri = "/x" ngx.ctx.a = 1 ngx.header["x-a"] = "1" local s = ngx.status`,
		`local x = ngx.HTTP_OK + ngx.ERR + ngx.OK`,
		`local v = kong.ctx.shared.callouts.c.response.body`,
		`local v = kong.version`,
		`kong.log("called ", "as notice")`,
	}
	for _, src := range good {
		if _, err := Compile(src, "x"); err != nil {
			t.Errorf("%q: %v", src, err)
		}
	}
}

func TestRuntimeErrorsNameTheFunction(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	c, err := Compile("local req = kong.request\nlocal x = 1\nreq.get_foo()", "chunk")
	if err != nil {
		t.Fatal(err)
	}
	err = sb.Run(context.Background(), c, newHost())
	var re *RuntimeError
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "req.get_foo is nil") || !strings.Contains(re.Msg, ":3:") {
		t.Fatalf("got %v", err)
	}
}

// TestNamePhasesMatchTheChecks: each function raises Kong's phase error
// in exactly the phases the table leaves out.
func TestNamePhasesMatchTheChecks(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	skip := map[string]bool{"kong.response.exit": true, "kong.response.error": true, "ngx.exit": true}
	for _, phase := range strings.Split(allPhases, ", ") {
		for _, n := range Names {
			if n.Kind != "function" || skip[n.Path] {
				continue
			}
			h := newHost()
			h.phase = phase
			src := `local ok, err = pcall(` + n.Path + `, "x", "y")
kong.ctx.shared.refused = not ok and tostring(err):find("cannot be called in", 1, true) ~= nil`
			if err := run(t, sb, src, h); err != nil {
				t.Fatalf("%s in %s: %v", n.Path, phase, err)
			}
			listed := strings.Contains(", "+n.Phases+", ", ", "+phase+", ")
			if refused := h.shared["refused"] == true; refused == listed {
				t.Errorf("%s in %s: refused %v, but the table lists %q", n.Path, phase, refused, n.Phases)
			}
		}
	}
}
