package lua

import (
	"reflect"
	"testing"
)

func TestExpressionGlobals(t *testing.T) {
	for src, want := range map[string][]string{
		`query.customer_id`:                                 {"query"},
		`headers["x"] .. shared.k`:                          {"headers", "shared"},
		`(function(v, ...) local w = v return w end)(nope)`: {"nope"},
		`string.upper(tostring(#callouts.a.response.body))`: {"callouts", "string", "tostring"},
	} {
		c, err := CompileExpr(src, "t")
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Globals(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: globals %v, want %v", src, got, want)
		}
	}
}

func TestTemplateNamesAreTheSandboxGlobals(t *testing.T) {
	sb := New(Options{})
	defer sb.Close()
	names := map[string]bool{}
	for _, n := range sb.TemplateNames() {
		names[n] = true
	}
	for _, n := range []string{"headers", "query_params", "uri_captures", "shared", "callouts", "kong", "ngx", "string", "tostring", "type"} {
		if !names[n] {
			t.Errorf("%s missing from %v", n, sb.TemplateNames())
		}
	}
	for _, n := range []string{"query", "io", "os_execute", "debug", "load"} {
		if names[n] {
			t.Errorf("%s should not be a template name", n)
		}
	}
}
