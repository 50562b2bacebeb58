package lua

import (
	"reflect"
	"sort"
	"strings"

	"github.com/yuin/gopher-lua/ast"
)

// Refs is what a chunk or expression refers to, found statically.
type Refs struct {
	// Callouts are the names in callouts.<name>, shared.callouts.<name> and
	// kong.ctx.shared.callouts.<name>, sorted and unique.
	Callouts []string
	// DynamicCallouts: the callouts table (or one of its parents) is read
	// in a way the names cannot be known (callouts[x], local s = kong.ctx.shared).
	DynamicCallouts bool
	// Kong lists the static kong.* paths used, e.g. "kong.request.get_body".
	Kong []string
	// DynamicKong: kong (or a part of it) is aliased or indexed by a
	// computed key, so Kong may miss calls.
	DynamicKong bool
	// Uses are the static kong.* and ngx.* paths with their chunk line,
	// in source order (the load check of unknown names).
	Uses []Use
	// Calls are the calls of a dotted name (kong.x.f, req.get_foo,
	// cache:get) by line, to name the function when a call fails.
	Calls map[int][]string
}

// Use is one static kong.* or ngx.* reference.
type Use struct {
	Path string
	Line int
	Call bool
}

// UsesKong tells whether path (e.g. "kong.request.get_body") may be
// used: it is listed, or kong is used dynamically. An ngx.* path is
// looked up among Uses.
func (r Refs) UsesKong(path string) bool {
	if strings.HasPrefix(path, "ngx.") {
		for _, u := range r.Uses {
			if u.Path == path || strings.HasPrefix(u.Path, path+".") || (strings.HasPrefix(path, u.Path+".") && u.Path != "ngx") {
				return true
			}
		}
		return false
	}
	if r.DynamicKong {
		return true
	}
	for _, k := range r.Kong {
		if k == path || strings.HasPrefix(k, path+".") {
			return true
		}
		// an alias of a parent (local req = kong.request) is listed as the parent
		if strings.HasPrefix(path, k+".") && k != "kong" {
			return true
		}
	}
	return false
}

type analyzer struct {
	callouts map[string]bool
	kong     map[string]bool
	dynC     bool
	dynK     bool
	uses     []Use
	calls    map[int][]string
	line     int  // of the reference being recorded
	call     bool // the reference is called
}

func analyze(stmts []ast.Stmt) Refs {
	a := &analyzer{callouts: map[string]bool{}, kong: map[string]bool{}, calls: map[int][]string{}}
	a.walk(reflect.ValueOf(stmts))
	r := Refs{DynamicCallouts: a.dynC, DynamicKong: a.dynK, Uses: a.uses, Calls: a.calls}
	for k := range a.callouts {
		r.Callouts = append(r.Callouts, k)
	}
	for k := range a.kong {
		r.Kong = append(r.Kong, k)
	}
	sort.Strings(r.Callouts)
	sort.Strings(r.Kong)
	return r
}

var exprType = reflect.TypeOf((*ast.Expr)(nil)).Elem()

func (a *analyzer) walk(v reflect.Value) {
	if !v.IsValid() {
		return
	}
	if v.Kind() == reflect.Interface || v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return
		}
		if v.Type().Implements(exprType) {
			if e, ok := v.Interface().(ast.Expr); ok && a.expr(e) {
				return
			}
		}
		a.walk(v.Elem())
		return
	}
	switch v.Kind() {
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			a.walk(v.Index(i))
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				a.walk(v.Field(i))
			}
		}
	}
}

// chain flattens a.b["c"][x] into its root and keys; a non-constant key
// is "" and its expression is returned in rest.
func chain(e ast.Expr) (root string, keys []string, rest []ast.Expr, ok bool) {
	switch t := e.(type) {
	case *ast.IdentExpr:
		return t.Value, nil, nil, true
	case *ast.AttrGetExpr:
		root, keys, rest, ok = chain(t.Object)
		if !ok {
			return
		}
		if s, isStr := t.Key.(*ast.StringExpr); isStr {
			keys = append(keys, s.Value)
		} else {
			keys = append(keys, "")
			rest = append(rest, t.Key)
		}
		return
	}
	return "", nil, nil, false
}

// expr handles a reference chain; it returns true when it walked e itself.
func (a *analyzer) expr(e ast.Expr) bool {
	if call, ok := e.(*ast.FuncCallExpr); ok && call.Receiver == nil {
		root, keys, rest, ok := chain(call.Func)
		if !ok {
			return false
		}
		a.noteCall(call.Line(), root, keys)
		if !isRoot(root) {
			return false
		}
		a.line, a.call = call.Line(), true
		a.ref(root, keys)
		a.call = false
		for _, r := range rest {
			a.walk(reflect.ValueOf(r))
		}
		for _, arg := range call.Args {
			a.walk(reflect.ValueOf(arg))
		}
		return true
	}
	if call, ok := e.(*ast.FuncCallExpr); ok && call.Receiver != nil && call.Method != "" {
		root, keys, rest, ok := chain(call.Receiver)
		if ok {
			a.noteCall(call.Line(), root, append(append([]string(nil), keys...), ":"+call.Method))
		}
		if ok && isRoot(root) {
			a.line, a.call = call.Line(), true
			a.ref(root, append(keys, call.Method))
			a.call = false
			for _, r := range rest {
				a.walk(reflect.ValueOf(r))
			}
			for _, arg := range call.Args {
				a.walk(reflect.ValueOf(arg))
			}
			return true
		}
		return false
	}
	root, keys, rest, ok := chain(e)
	if !ok || !isRoot(root) {
		return false
	}
	a.line = e.Line()
	a.ref(root, keys)
	for _, r := range rest {
		a.walk(reflect.ValueOf(r))
	}
	return true
}

func isRoot(n string) bool { return n == "kong" || n == "callouts" || n == "shared" || n == "ngx" }

// noteCall records the dotted name of a call for runtime errors.
func (a *analyzer) noteCall(line int, root string, keys []string) {
	name := root
	for _, k := range keys {
		switch {
		case k == "":
			name += "[?]"
		case strings.HasPrefix(k, ":"):
			name += k
		default:
			name += "." + k
		}
	}
	for _, n := range a.calls[line] {
		if n == name {
			return
		}
	}
	a.calls[line] = append(a.calls[line], name)
}

// use records a static kong.* or ngx.* path (up to a computed key).
func (a *analyzer) use(root string, keys []string) {
	p := root
	call := a.call
	for _, k := range keys {
		if k == "" {
			call = false // a computed key: the name called is unknown
			break
		}
		p += "." + k
	}
	a.uses = append(a.uses, Use{Path: p, Line: a.line, Call: call})
}

func (a *analyzer) ref(root string, keys []string) {
	if root == "kong" || root == "ngx" {
		a.use(root, keys)
	}
	switch root {
	case "callouts":
		a.calloutKeys(keys)
	case "shared":
		a.sharedKeys(keys)
	case "kong":
		p := "kong"
		for _, k := range keys {
			if k == "" {
				a.dynK = true
				break
			}
			p += "." + k
		}
		a.kong[p] = true
		if len(keys) == 0 || (len(keys) == 1 && keys[0] != "") {
			a.dynK = a.dynK || len(keys) == 0 // bare kong is an alias
		}
		switch {
		case len(keys) == 0 || keys[0] == "":
			a.dynC = true
		case keys[0] == "ctx":
			switch {
			case len(keys) == 1 || keys[1] == "":
				a.dynC = true
			case keys[1] == "shared":
				a.sharedKeys(keys[2:])
			}
		}
	}
}

func (a *analyzer) sharedKeys(keys []string) {
	switch {
	case len(keys) == 0 || keys[0] == "":
		a.dynC = true
	case keys[0] == "callouts":
		a.calloutKeys(keys[1:])
	}
}

func (a *analyzer) calloutKeys(keys []string) {
	if len(keys) == 0 || keys[0] == "" {
		a.dynC = true
		return
	}
	a.callouts[keys[0]] = true
}
