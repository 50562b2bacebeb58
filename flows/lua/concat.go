package lua

import (
	"reflect"
	"strconv"
	"strings"

	glua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/ast"
)

// The `..` operator is the one string builder no library cap reaches: in
// gopher-lua it is a VM instruction, and one instruction can build a
// string of any size outside the time limit (`s = s .. s .. s .. s` in a
// loop reaches hundreds of MB and runs far past the limit). So chunks
// are compiled with every `a .. b .. c` replaced by a call of concatName,
// which does what the instruction does, capped at Options.MaxStringLen.

// concatName is the global the rewritten chunks call; no Lua identifier
// can name it, so no chunk can shadow or replace it.
const concatName = "\x00concat"

// guardConcat rewrites every concatenation in stmts (in place).
func guardConcat(stmts []ast.Stmt) { rewriteConcat(reflect.ValueOf(stmts)) }

func rewriteConcat(v reflect.Value) {
	switch v.Kind() {
	case reflect.Interface:
		if v.IsNil() {
			return
		}
		if c, ok := v.Interface().(*ast.StringConcatOpExpr); ok && v.CanSet() {
			v.Set(reflect.ValueOf(concatCall(c)))
			return
		}
		rewriteConcat(v.Elem())
	case reflect.Pointer:
		if !v.IsNil() {
			rewriteConcat(v.Elem())
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			rewriteConcat(v.Index(i))
		}
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				rewriteConcat(v.Field(i))
			}
		}
	}
}

// concatCall turns a .. (b .. c) (Lua's concatenation is right
// associative) into concatName(3, a, b, c). The count comes first so that
// a last operand returning several values (f() or ...) is cut to one, as
// the operator does.
func concatCall(c *ast.StringConcatOpExpr) ast.Expr {
	ops := []ast.Expr{c.Lhs}
	for r := c.Rhs; ; {
		if rc, ok := r.(*ast.StringConcatOpExpr); ok {
			ops = append(ops, rc.Lhs)
			r = rc.Rhs
			continue
		}
		ops = append(ops, r)
		break
	}
	n := &ast.NumberExpr{Value: strconv.Itoa(len(ops))}
	fn := &ast.IdentExpr{Value: concatName}
	args := []ast.Expr{n}
	for i := range ops {
		rewriteConcat(reflect.ValueOf(ops).Index(i))
		args = append(args, ops[i])
	}
	call := &ast.FuncCallExpr{Func: fn, Args: args, AdjustRet: true}
	for _, e := range []ast.Expr{call, fn, n} {
		e.SetLine(c.Line())
		e.SetLastLine(c.LastLine())
	}
	return call
}

// concat is concatName: Lua 5.1's concatenation of its operands (after the
// count), right to left: runs of strings and numbers are joined at once,
// anything else goes through __concat; a result longer than MaxStringLen
// is an error.
func (s *state) concat(L *glua.LState) int {
	n := L.CheckInt(1)
	var small [8]glua.LValue
	vals := small[:0]
	for i := 0; i < n; i++ {
		vals = append(vals, L.Get(i+2))
	}
	max := s.sb.opts.MaxStringLen
	for len(vals) > 1 {
		top := len(vals)
		a, b := vals[top-2], vals[top-1]
		if glua.LVCanConvToString(a) && glua.LVCanConvToString(b) {
			j := top - 2
			for j > 0 && glua.LVCanConvToString(vals[j-1]) {
				j--
			}
			total := 0
			for _, v := range vals[j:top] {
				if sv, ok := v.(glua.LString); ok {
					total += len(sv)
				} else {
					total += 24 // a number's longest form
				}
			}
			if total > max {
				L.Error(glua.LString("string concatenation: result too large (limit "+strconv.Itoa(max)+" bytes)"), 2)
			}
			var sb strings.Builder
			sb.Grow(total)
			for _, v := range vals[j:top] {
				sb.WriteString(glua.LVAsString(v))
			}
			vals = append(vals[:j], glua.LString(sb.String()))
			continue
		}
		mm := L.GetMetaField(a, "__concat")
		if mm.Type() != glua.LTFunction {
			mm = L.GetMetaField(b, "__concat")
		}
		if mm.Type() != glua.LTFunction {
			L.Error(glua.LString("cannot perform concat operation between "+a.Type().String()+" and "+b.Type().String()), 2)
		}
		L.Push(mm)
		L.Push(a)
		L.Push(b)
		L.Call(2, 1)
		r := L.Get(-1)
		L.Pop(1)
		vals = append(vals[:top-2], r)
	}
	if len(vals) == 0 {
		L.Push(glua.LNil)
		return 1
	}
	L.Push(vals[0])
	return 1
}
