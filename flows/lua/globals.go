package lua

import (
	"reflect"
	"sort"
	"sync"

	glua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/ast"
)

// names is what one walk of a chunk's syntax finds about global names.
// Scopes are not tracked: a name declared or assigned anywhere counts
// everywhere, so a check built on it may miss a global but never invents
// one.
type names struct {
	read     map[string]bool // every identifier
	used     map[string]int  // identifiers called or indexed, at their first line
	local    map[string]bool // locals, parameters, loop variables, self
	assigned map[string]bool // globals the chunk assigns (x = 1, function f() end)
	require  *UnknownNameError
}

func scanNames(stmts []ast.Stmt) *names {
	nm := &names{read: map[string]bool{}, used: map[string]int{}, local: map[string]bool{}, assigned: map[string]bool{}}
	use := func(e ast.Expr) {
		if id, ok := e.(*ast.IdentExpr); ok {
			if _, seen := nm.used[id.Value]; !seen {
				nm.used[id.Value] = id.Line()
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
			case *ast.IdentExpr:
				nm.read[n.Value] = true
				return
			case *ast.AttrGetExpr:
				use(n.Object) // io.open: indexing nil fails; reading a nil global does not
			case *ast.LocalAssignStmt:
				for _, name := range n.Names {
					nm.local[name] = true
				}
			case *ast.AssignStmt:
				for _, e := range n.Lhs {
					if id, ok := e.(*ast.IdentExpr); ok {
						nm.assigned[id.Value] = true
					}
				}
			case *ast.ParList:
				for _, name := range n.Names {
					nm.local[name] = true
				}
			case *ast.NumberForStmt:
				nm.local[n.Name] = true
			case *ast.GenericForStmt:
				for _, name := range n.Names {
					nm.local[name] = true
				}
			case *ast.FuncName:
				// function a.b() ... end assigns into a.b: a is read
				if id, ok := n.Func.(*ast.IdentExpr); ok && n.Receiver == nil && n.Method == "" {
					nm.assigned[id.Value] = true // function f() ... end
				}
				if n.Method != "" {
					nm.local["self"] = true
				}
			case *ast.FuncCallExpr:
				if n.Receiver != nil {
					use(n.Receiver)
				} else {
					use(n.Func)
				}
				if id, ok := n.Func.(*ast.IdentExpr); ok && id.Value == "require" && len(n.Args) > 0 && nm.require == nil {
					if lit, ok := n.Args[0].(*ast.StringExpr); ok && !requireable[lit.Value] {
						nm.require = &UnknownNameError{Name: `require "` + lit.Value + `"`, Line: n.Line()}
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
	return nm
}

// globals lists the global names stmts read: identifiers that no local,
// parameter or loop variable in them declares.
func globals(stmts []ast.Stmt) []string {
	nm := scanNames(stmts)
	out := make([]string, 0, len(nm.read))
	for n := range nm.read {
		if !nm.local[n] {
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
	names := append([]string(nil), templateVars...)
	for n := range sandboxGlobals() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// checkChunkGlobals refuses, at load, what a chunk would fail on at run
// time: a global it calls or indexes that neither it nor the sandbox
// defines (io.open, load(...)) and a require of a module the sandbox lacks.
func checkChunkGlobals(stmts []ast.Stmt) error {
	nm := scanNames(stmts)
	base := sandboxGlobals()
	var bad *UnknownNameError
	for name, line := range nm.used {
		if nm.local[name] || nm.assigned[name] || base[name] {
			continue
		}
		if bad == nil || line < bad.Line || line == bad.Line && name < bad.Name {
			bad = &UnknownNameError{Name: name, Line: line}
		}
	}
	if nm.require != nil && (bad == nil || nm.require.Line <= bad.Line) {
		return nm.require
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
// sandbox state so the checks cannot drift from what runs (they do not
// depend on a sandbox's options).
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
