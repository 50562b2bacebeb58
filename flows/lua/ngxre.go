package lua

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	glua "github.com/yuin/gopher-lua"
)

// ngx.re on Go's regexp (RE2): linear time, so no PCRE backtracking
// limits are needed, but no backreferences or lookaround either (those
// patterns are errors, returned as nil, err like a bad PCRE pattern).

type ngxRegex struct {
	re       *regexp.Regexp
	anchored bool // flag a: the match must start at the start position
}

var (
	reCache   sync.Map // pattern "\x00" flags -> *ngxRegex
	reCount   int
	reCountMu sync.Mutex
)

const maxCachedRegexes = 4096

// ReFlags are the ngx.re option letters sidecall accepts.
const ReFlags = "aijmosux"

func compileNgxRegex(pattern, flags string) (*ngxRegex, error) {
	key := pattern + "\x00" + flags
	if r, ok := reCache.Load(key); ok {
		return r.(*ngxRegex), nil
	}
	prefix := ""
	r := &ngxRegex{}
	for _, f := range flags {
		switch f {
		case 'i', 's', 'm':
			prefix += string(f)
		case 'x':
			pattern = stripExtended(pattern)
		case 'a':
			r.anchored = true
		case 'j', 'o', 'u':
			// JIT, compile once (Go caches anyway), UTF-8 (Go's default)
		default:
			return nil, fmt.Errorf("unknown flag \"%c\" (sidecall's ngx.re supports %s)", f, ReFlags)
		}
	}
	if prefix != "" {
		pattern = "(?" + prefix + ")" + pattern
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("failed to compile regex %q: %s (Go regexp: no backreferences or lookaround)", pattern, strings.TrimPrefix(err.Error(), "error parsing regexp: "))
	}
	r.re = re
	reCountMu.Lock()
	if reCount < maxCachedRegexes {
		reCount++
		reCache.Store(key, r)
	}
	reCountMu.Unlock()
	return r, nil
}

// stripExtended drops whitespace and # comments outside character
// classes and escapes (PCRE's x flag).
func stripExtended(p string) string {
	var b strings.Builder
	inClass, comment := false, false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case comment:
			if c == '\n' {
				comment = false
			}
		case c == '\\' && i+1 < len(p):
			b.WriteByte(c)
			b.WriteByte(p[i+1])
			i++
		case inClass:
			if c == ']' {
				inClass = false
			}
			b.WriteByte(c)
		case c == '[':
			inClass = true
			b.WriteByte(c)
		case c == '#':
			comment = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// find returns the submatch indexes of the first match at or after pos.
func (r *ngxRegex) find(subj string, pos int) []int {
	if pos > len(subj) {
		return nil
	}
	loc := r.re.FindStringSubmatchIndex(subj[pos:])
	if loc == nil || (r.anchored && loc[0] != 0) {
		return nil
	}
	for i := range loc {
		if loc[i] >= 0 {
			loc[i] += pos
		}
	}
	return loc
}

// captures builds ngx.re's captures table: [0] the match, [n] the groups
// (false when a group did not take part), names as keys.
func (s *state) captures(L *glua.LState, r *ngxRegex, subj string, loc []int) *glua.LTable {
	n := len(loc)/2 - 1
	t := L.CreateTable(n, 1)
	names := r.re.SubexpNames()
	for i := 0; i <= n; i++ {
		var v glua.LValue = glua.LFalse
		if loc[2*i] >= 0 {
			v = glua.LString(subj[loc[2*i]:loc[2*i+1]])
		}
		t.RawSetInt(i, v)
		if i > 0 && names[i] != "" {
			t.RawSetString(names[i], v)
		}
	}
	return t
}

func (s *state) reArgs(L *glua.LState) (string, *ngxRegex, bool) {
	subj := L.CheckString(1)
	r, err := compileNgxRegex(L.CheckString(2), L.OptString(3, ""))
	if err != nil {
		L.Push(glua.LNil)
		L.Push(glua.LString(err.Error()))
		return "", nil, false
	}
	s.chargeBytes(len(subj))
	return subj, r, true
}

// ctxPos reads ctx.pos (1-based) of argument n.
func ctxPos(L *glua.LState, n int) (*glua.LTable, int) {
	ctx, ok := L.Get(n).(*glua.LTable)
	if !ok {
		return nil, 0
	}
	if p, ok := ctx.RawGetString("pos").(glua.LNumber); ok && p >= 1 {
		return ctx, int(p) - 1
	}
	return ctx, 0
}

// reFirst is the first match of ngx.re.match and ngx.re.find (subject,
// regex, options, ctx): its location, ctx.pos moved past it. Without one,
// loc is nil and n values (nil, or nil and the error) are on the stack.
func (s *state) reFirst(L *glua.LState) (subj string, r *ngxRegex, loc []int, n int) {
	subj, r, ok := s.reArgs(L)
	if !ok {
		return "", nil, nil, 2
	}
	ctx, pos := ctxPos(L, 4)
	if loc = r.find(subj, pos); loc == nil {
		L.Push(glua.LNil)
		return "", nil, nil, 1
	}
	if ctx != nil {
		ctx.RawSetString("pos", glua.LNumber(loc[1]+1))
	}
	return subj, r, loc, 0
}

func (s *state) reTable() *glua.LTable {
	L := s.L
	t := fns(L, map[string]glua.LGFunction{
		"match": func(L *glua.LState) int {
			subj, r, loc, n := s.reFirst(L)
			if loc == nil {
				return n
			}
			L.Push(s.captures(L, r, subj, loc))
			return 1
		},
		"find": func(L *glua.LState) int {
			_, _, loc, n := s.reFirst(L)
			if loc == nil {
				return n
			}
			nth := L.OptInt(5, 0)
			if nth < 0 || 2*nth+1 >= len(loc) || loc[2*nth] < 0 {
				L.Push(glua.LNil)
				return 1
			}
			L.Push(glua.LNumber(loc[2*nth] + 1))
			L.Push(glua.LNumber(loc[2*nth+1]))
			return 2
		},
		"gmatch": func(L *glua.LState) int {
			subj, r, ok := s.reArgs(L)
			if !ok {
				return 2
			}
			pos := 0
			done := false
			L.Push(L.NewFunction(func(L *glua.LState) int {
				if done {
					L.Push(glua.LNil)
					return 1
				}
				loc := r.find(subj, pos)
				if loc == nil {
					done = true
					L.Push(glua.LNil)
					return 1
				}
				pos = loc[1]
				if loc[1] == loc[0] {
					pos++ // an empty match: step on
				}
				L.Push(s.captures(L, r, subj, loc))
				return 1
			}))
			return 1
		},
		"sub":  func(L *glua.LState) int { return s.reSub(L, false) },
		"gsub": func(L *glua.LState) int { return s.reSub(L, true) },
	})
	return t
}

func (s *state) reSub(L *glua.LState, all bool) int {
	subj := L.CheckString(1)
	r, err := compileNgxRegex(L.CheckString(2), L.OptString(4, ""))
	if err != nil {
		L.Push(glua.LNil)
		L.Push(glua.LNil)
		L.Push(glua.LString(err.Error()))
		return 3
	}
	s.chargeBytes(len(subj))
	repl := L.Get(3)
	tmpl, isStr := repl.(glua.LString)
	fn, isFn := repl.(*glua.LFunction)
	if !isStr && !isFn {
		if n, ok := repl.(glua.LNumber); ok {
			tmpl, isStr = glua.LString(FormatNumber(float64(n))), true
		} else {
			L.RaiseError("bad argument #3 (string or function expected)")
		}
	}
	var b strings.Builder
	pos, last, n := 0, 0, 0
	for pos <= len(subj) {
		loc := r.find(subj, pos)
		if loc == nil {
			break
		}
		b.WriteString(subj[last:loc[0]])
		if isStr {
			if err := expandNgx(&b, string(tmpl), r, subj, loc); err != nil {
				L.Push(glua.LNil)
				L.Push(glua.LNil)
				L.Push(glua.LString(err.Error()))
				return 3
			}
		} else {
			L.Push(fn)
			L.Push(s.captures(L, r, subj, loc))
			L.Call(1, 1)
			b.WriteString(L.ToStringMeta(L.Get(-1)).String())
			L.Pop(1)
		}
		if b.Len() > s.sb.opts.MaxStringLen {
			L.RaiseError("ngx.re: result too large (limit %d bytes)", s.sb.opts.MaxStringLen)
		}
		n++
		last = loc[1]
		pos = loc[1]
		if loc[1] == loc[0] {
			if pos < len(subj) {
				b.WriteByte(subj[pos])
			}
			pos++
			last = pos
		}
		if !all {
			break
		}
	}
	if last < len(subj) {
		b.WriteString(subj[last:])
	}
	s.chargeBytes(b.Len())
	L.Push(glua.LString(b.String()))
	L.Push(glua.LNumber(n))
	return 2
}

// expandNgx writes ngx.re.sub's template: $0..$99, ${1}, ${name}, $$.
func expandNgx(b *strings.Builder, tmpl string, r *ngxRegex, subj string, loc []int) error {
	group := func(i int) {
		if 2*i+1 < len(loc) && loc[2*i] >= 0 {
			b.WriteString(subj[loc[2*i]:loc[2*i+1]])
		}
	}
	for i := 0; i < len(tmpl); i++ {
		c := tmpl[i]
		if c != '$' {
			b.WriteByte(c)
			continue
		}
		if i+1 >= len(tmpl) {
			return fmt.Errorf("invalid capturing variable name found in %q", tmpl)
		}
		next := tmpl[i+1]
		switch {
		case next == '$':
			b.WriteByte('$')
			i++
		case next >= '0' && next <= '9':
			j := i + 1
			for j < len(tmpl) && tmpl[j] >= '0' && tmpl[j] <= '9' {
				j++
			}
			k, _ := strconv.Atoi(tmpl[i+1 : j])
			group(k)
			i = j - 1
		case next == '{':
			end := strings.IndexByte(tmpl[i:], '}')
			if end < 0 {
				return fmt.Errorf("the closing bracket in %q is missing", tmpl)
			}
			name := tmpl[i+2 : i+end]
			if k, err := strconv.Atoi(name); err == nil {
				group(k)
			} else if k := r.re.SubexpIndex(name); k >= 0 {
				group(k)
			}
			i += end
		default:
			return fmt.Errorf("invalid capturing variable name found in %q", tmpl)
		}
	}
	return nil
}
