package lua

import (
	"reflect"
	"sort"

	glua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/ast"
)

// globals lists the global names stmts read: identifiers that no local,
// parameter or loop variable in them declares. Scopes are not tracked, so a
// name declared anywhere counts as local everywhere: a check built on this
// may miss a global but never invents one.
func globals(stmts []ast.Stmt) []string {
	used, local := map[string]bool{}, map[string]bool{}
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		if !v.IsValid() {
			return
		}
		switch v.Kind() {
		case reflect.Interface, reflect.Pointer:
			if v.IsNil() {
				return
			}
			switch n := v.Interface().(type) {
			case *ast.IdentExpr:
				used[n.Value] = true
				return
			case *ast.LocalAssignStmt:
				for _, name := range n.Names {
					local[name] = true
				}
			case *ast.ParList:
				for _, name := range n.Names {
					local[name] = true
				}
			case *ast.NumberForStmt:
				local[n.Name] = true
			case *ast.GenericForStmt:
				for _, name := range n.Names {
					local[name] = true
				}
			case *ast.FuncName:
				// function a.b() ... end assigns into a.b: a is read
				if id, ok := n.Func.(*ast.IdentExpr); ok {
					used[id.Value] = true
				}
				if n.Method != "" {
					local["self"] = true
				}
			}
			walk(v.Elem())
		case reflect.Slice:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i))
			}
		case reflect.Struct:
			for i := 0; i < v.NumField(); i++ {
				if v.Type().Field(i).IsExported() {
					walk(v.Field(i))
				}
			}
		}
	}
	walk(reflect.ValueOf(stmts))
	out := make([]string, 0, len(used))
	for n := range used {
		if !local[n] {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// Globals are the global names an expression chunk (CompileExpr) reads.
func (c *Chunk) Globals() []string { return c.globals }

// templateVars are the names a $(...) expression reads besides the
// sandbox's own globals (tplIndex).
var templateVars = []string{"headers", "query_params", "uri_captures", "shared", "callouts"}

// TemplateNames lists every name a $(...) expression may read: the
// template variables and the globals the sandbox provides.
func (s *Sandbox) TemplateNames() []string {
	st := s.get()
	defer s.put(st)
	names := append([]string(nil), templateVars...)
	st.base.ForEach(func(k, _ glua.LValue) {
		if n, ok := k.(glua.LString); ok {
			names = append(names, string(n))
		}
	})
	sort.Strings(names)
	return names
}
