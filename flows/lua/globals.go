package lua

import (
	"reflect"
	"sort"
	"sync"

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

// checkChunkGlobals refuses, at load, what a chunk would fail on at run
// time: a global it calls or indexes that neither it nor the sandbox
// defines (io.open, load(...)) and a require of a module the sandbox lacks. Scopes are
// not tracked (a name declared or assigned anywhere counts), so it never
// refuses a chunk that could work.
func checkChunkGlobals(stmts []ast.Stmt) error {
	first := map[string]int{} // globals called or indexed, at their first line
	defined := map[string]bool{}
	var req *UnknownNameError
	use := func(e ast.Expr) {
		if id, ok := e.(*ast.IdentExpr); ok {
			if _, seen := first[id.Value]; !seen {
				first[id.Value] = id.Line()
			}
		}
	}
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
			case *ast.AttrGetExpr:
				use(n.Object) // io.open: indexing nil fails; reading a nil global does not
			case *ast.LocalAssignStmt:
				for _, name := range n.Names {
					defined[name] = true
				}
			case *ast.AssignStmt:
				for _, e := range n.Lhs {
					if id, ok := e.(*ast.IdentExpr); ok {
						defined[id.Value] = true
					}
				}
			case *ast.ParList:
				for _, name := range n.Names {
					defined[name] = true
				}
			case *ast.NumberForStmt:
				defined[n.Name] = true
			case *ast.GenericForStmt:
				for _, name := range n.Names {
					defined[name] = true
				}
			case *ast.FuncName:
				if id, ok := n.Func.(*ast.IdentExpr); ok && n.Receiver == nil && n.Method == "" {
					defined[id.Value] = true // function f() ... end
				}
				if n.Method != "" {
					defined["self"] = true
				}
			case *ast.FuncCallExpr:
				if n.Receiver != nil {
					use(n.Receiver)
				} else {
					use(n.Func)
				}
				if id, ok := n.Func.(*ast.IdentExpr); ok && id.Value == "require" && len(n.Args) > 0 && req == nil {
					if lit, ok := n.Args[0].(*ast.StringExpr); ok && !requireable[lit.Value] {
						req = &UnknownNameError{Name: `require "` + lit.Value + `"`, Line: n.Line()}
					}
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
	base := sandboxGlobals()
	var bad *UnknownNameError
	for name, line := range first {
		if defined[name] || base[name] {
			continue
		}
		if bad == nil || line < bad.Line || line == bad.Line && name < bad.Name {
			bad = &UnknownNameError{Name: name, Line: line}
		}
	}
	if req != nil && (bad == nil || req.Line <= bad.Line) {
		return req
	}
	if bad != nil {
		return bad
	}
	return nil
}

// requireable are the modules the sandbox's require gives (state.require).
var requireable = map[string]bool{"cjson": true, "cjson.safe": true}

var (
	baseOnce  sync.Once
	baseNames map[string]bool
)

// sandboxGlobals are the globals every chunk gets, read once from a
// sandbox state so the check cannot drift from what runs.
func sandboxGlobals() map[string]bool {
	baseOnce.Do(func() {
		sb := New(Options{PoolSize: 1})
		defer sb.Close()
		st := sb.get()
		defer sb.put(st)
		baseNames = map[string]bool{}
		st.base.ForEach(func(k, _ glua.LValue) {
			if n, ok := k.(glua.LString); ok {
				baseNames[string(n)] = true
			}
		})
	})
	return baseNames
}
