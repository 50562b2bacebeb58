package lua

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	glua "github.com/yuin/gopher-lua"
)

// Lua 5.1 pattern matching (string.find, match, gmatch, gsub), written
// after lstrlib.c with a step budget: gopher-lua's matcher cannot be
// interrupted, and a pattern like ".-.-b" is cubic in the subject's
// length. Here every 1024 steps the call's context is checked, so the time
// limit stops a runaway match.

const (
	maxCaptures  = 32
	capUnfinish  = -1
	capPosition  = -2
	maxMatchCall = 200
	specials     = "^$*+?.([%-"
)

type matchState struct {
	L     *glua.LState
	ctx   context.Context
	src   string
	pat   string
	level int
	capt  [maxCaptures]struct{ init, len int }
	steps int
	depth int
}

func (ms *matchState) errorf(format string, args ...any) {
	ms.L.RaiseError("%s", fmt.Sprintf(format, args...))
}

func (ms *matchState) step() {
	ms.steps++
	if ms.steps&1023 == 0 && ms.ctx != nil {
		select {
		case <-ms.ctx.Done():
			ms.L.RaiseError("%s", ms.ctx.Err().Error())
		default:
		}
	}
}

func (ms *matchState) pc(p int) byte {
	if p < len(ms.pat) {
		return ms.pat[p]
	}
	return 0
}

func (ms *matchState) sc(s int) byte {
	if s < len(ms.src) {
		return ms.src[s]
	}
	return 0
}

func (ms *matchState) classEnd(p int) int {
	c := ms.pc(p)
	p++
	switch c {
	case '%':
		if p >= len(ms.pat) {
			ms.errorf("malformed pattern (ends with '%%')")
		}
		return p + 1
	case '[':
		if ms.pc(p) == '^' {
			p++
		}
		for {
			if p >= len(ms.pat) {
				ms.errorf("malformed pattern (missing ']')")
			}
			c := ms.pat[p]
			p++
			if c == '%' && p < len(ms.pat) {
				p++
			}
			if ms.pc(p) == ']' && p < len(ms.pat) {
				break
			}
		}
		return p + 1
	}
	return p
}

func isalpha(c byte) bool  { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isdigit(c byte) bool  { return c >= '0' && c <= '9' }
func islower(c byte) bool  { return c >= 'a' && c <= 'z' }
func isupper(c byte) bool  { return c >= 'A' && c <= 'Z' }
func isspace(c byte) bool  { return c == ' ' || c >= '\t' && c <= '\r' }
func iscntrl(c byte) bool  { return c < 32 || c == 127 }
func ispunct(c byte) bool  { return c > 32 && c < 127 && !isalpha(c) && !isdigit(c) }
func isxdigit(c byte) bool { return isdigit(c) || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func matchClass(c, cl byte) bool {
	var res bool
	lc := cl
	if isupper(cl) {
		lc = cl + 32
	}
	switch lc {
	case 'a':
		res = isalpha(c)
	case 'c':
		res = iscntrl(c)
	case 'd':
		res = isdigit(c)
	case 'l':
		res = islower(c)
	case 'p':
		res = ispunct(c)
	case 's':
		res = isspace(c)
	case 'u':
		res = isupper(c)
	case 'w':
		res = isalpha(c) || isdigit(c)
	case 'x':
		res = isxdigit(c)
	case 'z':
		res = c == 0
	default:
		return cl == c
	}
	if isupper(cl) {
		return !res
	}
	return res
}

// matchBracketClass: p at '[', ec at the closing ']'.
func (ms *matchState) matchBracketClass(c byte, p, ec int) bool {
	sig := true
	if ms.pc(p+1) == '^' {
		sig = false
		p++
	}
	for p++; p < ec; p++ {
		switch {
		case ms.pat[p] == '%':
			p++
			if matchClass(c, ms.pc(p)) {
				return sig
			}
		case ms.pc(p+1) == '-' && p+2 < ec:
			p += 2
			if ms.pat[p-2] <= c && c <= ms.pat[p] {
				return sig
			}
		case ms.pat[p] == c:
			return sig
		}
	}
	return !sig
}

func (ms *matchState) singleMatch(s, p, ep int) bool {
	if s >= len(ms.src) {
		return false
	}
	c := ms.src[s]
	switch ms.pat[p] {
	case '.':
		return true
	case '%':
		return matchClass(c, ms.pc(p+1))
	case '[':
		return ms.matchBracketClass(c, p, ep-1)
	}
	return ms.pat[p] == c
}

func (ms *matchState) matchBalance(s, p int) int {
	if p+1 >= len(ms.pat) {
		ms.errorf("unbalanced pattern")
	}
	if s >= len(ms.src) || ms.src[s] != ms.pat[p] {
		return -1
	}
	b, e := ms.pat[p], ms.pat[p+1]
	cont := 1
	for s++; s < len(ms.src); s++ {
		ms.step()
		switch ms.src[s] {
		case e:
			cont--
			if cont == 0 {
				return s + 1
			}
		case b:
			cont++
		}
	}
	return -1
}

func (ms *matchState) maxExpand(s, p, ep int) int {
	i := 0
	for ms.singleMatch(s+i, p, ep) {
		ms.step()
		i++
	}
	for ; i >= 0; i-- {
		if r := ms.match(s+i, ep+1); r >= 0 {
			return r
		}
	}
	return -1
}

func (ms *matchState) minExpand(s, p, ep int) int {
	for {
		if r := ms.match(s, ep+1); r >= 0 {
			return r
		}
		if ms.singleMatch(s, p, ep) {
			s++
		} else {
			return -1
		}
	}
}

func (ms *matchState) startCapture(s, p, what int) int {
	if ms.level >= maxCaptures {
		ms.errorf("too many captures")
	}
	ms.capt[ms.level].init = s
	ms.capt[ms.level].len = what
	ms.level++
	r := ms.match(s, p)
	if r < 0 {
		ms.level--
	}
	return r
}

func (ms *matchState) endCapture(s, p int) int {
	l := -1
	for i := ms.level - 1; i >= 0; i-- {
		if ms.capt[i].len == capUnfinish {
			l = i
			break
		}
	}
	if l < 0 {
		ms.errorf("invalid pattern capture")
	}
	ms.capt[l].len = s - ms.capt[l].init
	r := ms.match(s, p)
	if r < 0 {
		ms.capt[l].len = capUnfinish
	}
	return r
}

func (ms *matchState) matchCapture(s int, l byte) int {
	i := int(l) - '1'
	if i < 0 || i >= ms.level || ms.capt[i].len == capUnfinish {
		ms.errorf("invalid capture index")
	}
	c := ms.src[ms.capt[i].init : ms.capt[i].init+ms.capt[i].len]
	if strings.HasPrefix(ms.src[s:], c) {
		return s + len(c)
	}
	return -1
}

// match returns the end of the match of pat[p:] at src[s:], or -1.
func (ms *matchState) match(s, p int) int {
	ms.depth++
	defer func() { ms.depth-- }()
	if ms.depth > maxMatchCall {
		ms.errorf("pattern too complex")
	}
	for {
		ms.step()
		if p >= len(ms.pat) {
			return s
		}
		switch ms.pat[p] {
		case '(':
			if ms.pc(p+1) == ')' {
				return ms.startCapture(s, p+2, capPosition)
			}
			return ms.startCapture(s, p+1, capUnfinish)
		case ')':
			return ms.endCapture(s, p+1)
		case '%':
			switch next := ms.pc(p + 1); {
			case next == 'b':
				s = ms.matchBalance(s, p+2)
				if s < 0 {
					return -1
				}
				p += 4
				continue
			case next == 'f':
				p += 2
				if ms.pc(p) != '[' {
					ms.errorf("missing '[' after '%%f' in pattern")
				}
				ep := ms.classEnd(p)
				var prev byte
				if s > 0 {
					prev = ms.src[s-1]
				}
				if ms.matchBracketClass(prev, p, ep-1) || !ms.matchBracketClass(ms.sc(s), p, ep-1) {
					return -1
				}
				p = ep
				continue
			case isdigit(next):
				s = ms.matchCapture(s, next)
				if s < 0 {
					return -1
				}
				p += 2
				continue
			}
		case '$':
			if p+1 == len(ms.pat) {
				if s == len(ms.src) {
					return s
				}
				return -1
			}
		}
		ep := ms.classEnd(p)
		m := ms.singleMatch(s, p, ep)
		switch ms.pc(ep) {
		case '?':
			if ep < len(ms.pat) {
				if m {
					if r := ms.match(s+1, ep+1); r >= 0 {
						return r
					}
				}
				p = ep + 1
				continue
			}
		case '*':
			if ep < len(ms.pat) {
				return ms.maxExpand(s, p, ep)
			}
		case '+':
			if ep < len(ms.pat) {
				if !m {
					return -1
				}
				return ms.maxExpand(s+1, p, ep)
			}
		case '-':
			if ep < len(ms.pat) {
				return ms.minExpand(s, p, ep)
			}
		}
		if !m {
			return -1
		}
		s++
		p = ep
	}
}

func (ms *matchState) oneCapture(i, s, e int) glua.LValue {
	if i >= ms.level {
		if i == 0 {
			return glua.LString(ms.src[s:e])
		}
		ms.errorf("invalid capture index")
	}
	c := ms.capt[i]
	switch c.len {
	case capUnfinish:
		ms.errorf("unfinished capture")
	case capPosition:
		return glua.LNumber(c.init + 1)
	}
	return glua.LString(ms.src[c.init : c.init+c.len])
}

// pushCaptures pushes the captures (or the whole match when there are
// none and whole is true).
func (ms *matchState) pushCaptures(s, e int, whole bool) int {
	n := ms.level
	if n == 0 && whole {
		n = 1
	}
	for i := 0; i < n; i++ {
		ms.L.Push(ms.oneCapture(i, s, e))
	}
	return n
}

func posrelat(pos, n int) int {
	if pos < 0 {
		return n + pos + 1
	}
	return pos
}

func (s *state) findAux(L *glua.LState, find bool) int {
	src := L.CheckString(1)
	pat := L.CheckString(2)
	init := posrelat(L.OptInt(3, 1), len(src)) - 1
	if init < 0 {
		init = 0
	} else if init > len(src) {
		L.Push(glua.LNil) // as Lua 5.2+ and gopher-lua
		return 1
	}
	if find && (glua.LVAsBool(L.Get(4)) || !strings.ContainsAny(pat, specials)) {
		if i := strings.Index(src[init:], pat); i >= 0 {
			L.Push(glua.LNumber(init + i + 1))
			L.Push(glua.LNumber(init + i + len(pat)))
			return 2
		}
		L.Push(glua.LNil)
		return 1
	}
	anchor := strings.HasPrefix(pat, "^")
	if anchor {
		pat = pat[1:]
	}
	ms := &matchState{L: L, ctx: s.ctx, src: src, pat: pat}
	for s1 := init; ; s1++ {
		ms.level = 0
		if e := ms.match(s1, 0); e >= 0 {
			if find {
				L.Push(glua.LNumber(s1 + 1))
				L.Push(glua.LNumber(e))
				return ms.pushCaptures(-1, -1, false) + 2
			}
			return ms.pushCaptures(s1, e, true)
		}
		if s1 >= len(src) || anchor {
			break
		}
	}
	L.Push(glua.LNil)
	return 1
}

func (s *state) strFind(L *glua.LState) int  { return s.findAux(L, true) }
func (s *state) strMatch(L *glua.LState) int { return s.findAux(L, false) }

func (s *state) strGmatch(L *glua.LState) int {
	src := L.CheckString(1)
	pat := L.CheckString(2)
	pos := 0
	L.Push(L.NewFunction(func(L *glua.LState) int {
		ms := &matchState{L: L, ctx: s.ctx, src: src, pat: pat}
		for p := pos; p <= len(src); p++ {
			ms.level = 0
			if e := ms.match(p, 0); e >= 0 {
				pos = e
				if e == p {
					pos++
				}
				return ms.pushCaptures(p, e, true)
			}
		}
		pos = len(src) + 1
		return 0
	}))
	return 1
}

func (s *state) strGsub(L *glua.LState) int {
	src := L.CheckString(1)
	pat := L.CheckString(2)
	repl := L.Get(3)
	switch repl.Type() {
	case glua.LTNumber, glua.LTString, glua.LTTable, glua.LTFunction:
	default:
		L.ArgError(3, "string/function/table expected")
	}
	maxN := L.OptInt(4, len(src)+1)
	anchor := strings.HasPrefix(pat, "^")
	if anchor {
		pat = pat[1:]
	}
	limit := s.sb.opts.MaxStringLen
	ms := &matchState{L: L, ctx: s.ctx, src: src, pat: pat}
	var b bytes.Buffer
	grow := func() {
		if b.Len() > limit {
			L.RaiseError("string.gsub: result too large (limit %d bytes)", limit)
		}
	}
	pos, n := 0, 0
	for n < maxN {
		ms.level = 0
		e := ms.match(pos, 0)
		if e >= 0 {
			n++
			s.addValue(ms, &b, pos, e, repl)
			grow()
		}
		switch {
		case e >= 0 && e > pos:
			pos = e
		case pos < len(src):
			b.WriteByte(src[pos])
			pos++
		default:
			pos = len(src) + 1
		}
		if pos > len(src) || anchor {
			break
		}
	}
	if pos < len(src) {
		b.WriteString(src[pos:])
	}
	grow()
	L.Push(glua.LString(b.String()))
	L.Push(glua.LNumber(n))
	return 2
}

func (s *state) addValue(ms *matchState, b *bytes.Buffer, st, e int, repl glua.LValue) {
	L := ms.L
	var v glua.LValue
	switch r := repl.(type) {
	case glua.LString, glua.LNumber:
		rs := r.String()
		if b.Len()+len(rs) > s.sb.opts.MaxStringLen {
			L.RaiseError("string.gsub: result too large (limit %d bytes)", s.sb.opts.MaxStringLen)
		}
		for i := 0; i < len(rs); i++ {
			j := strings.IndexByte(rs[i:], '%')
			if j < 0 {
				b.WriteString(rs[i:])
				break
			}
			b.WriteString(rs[i : i+j])
			i += j + 1
			if i >= len(rs) {
				break
			}
			c := rs[i]
			switch {
			case !isdigit(c):
				b.WriteByte(c)
			case c == '0':
				b.WriteString(ms.src[st:e])
			default:
				b.WriteString(L.ToStringMeta(ms.oneCapture(int(c-'1'), st, e)).String())
			}
		}
		return
	case *glua.LFunction:
		top := L.GetTop()
		L.Push(r)
		n := ms.pushCaptures(st, e, true)
		L.Call(n, 1)
		v = L.Get(-1)
		L.SetTop(top)
	case *glua.LTable:
		v = L.GetTable(r, ms.oneCapture(0, st, e))
	}
	switch t := v.(type) {
	case *glua.LNilType:
		b.WriteString(ms.src[st:e])
	case glua.LBool:
		if !t {
			b.WriteString(ms.src[st:e])
		} else {
			L.RaiseError("invalid replacement value (a boolean)")
		}
	case glua.LString:
		b.WriteString(string(t))
	case glua.LNumber:
		b.WriteString(t.String())
	default:
		L.RaiseError("invalid replacement value (a %s)", v.Type())
	}
}
