package lua

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	glua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/ast"
	"github.com/yuin/gopher-lua/parse"
	"go.uber.org/zap"
)

// Defaults for Options.
const (
	DefaultTimeout      = 100 * time.Millisecond
	DefaultInstructions = 500_000 // VM instructions a call (library calls charged by what they build)
	DefaultMaxStringLen = 8 << 20
	DefaultMaxTableLen  = 1 << 20
	DefaultPoolSize     = 64
	callStackSize       = 200
	// registryGrowStep is how many stack slots a state's registry grows by
	// beyond what it needs: gopher-lua's default (32) made unpack of
	// 100k values on a fresh state take seconds of quadratic copying,
	// outside any limit.
	registryGrowStep = 4096
)

// Options tune a Sandbox. Zero values take the defaults.
type Options struct {
	Timeout      time.Duration // per call
	Instructions int64         // VM instructions per call (the instruction budget)
	MaxStringLen int           // longest string string.rep/format/gsub/table.concat may build
	MaxTableLen  int           // longest list cjson.decode/table.insert may build
	PoolSize     int           // idle states kept
	Log          *zap.Logger   // print() and errors when the Host has no logger
	// Plugins are the plugin names sidecall runs: kong.configuration.plugins.
	Plugins []string
}

// Sandbox runs compiled chunks on pooled, sandboxed Lua states. It is safe
// for concurrent use; each call takes a state from the pool.
type Sandbox struct {
	opts Options
	pool chan *state
}

// New returns a Sandbox.
func New(o Options) *Sandbox {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Instructions <= 0 {
		o.Instructions = DefaultInstructions
	}
	if o.MaxStringLen <= 0 {
		o.MaxStringLen = DefaultMaxStringLen
	}
	if o.MaxTableLen <= 0 {
		o.MaxTableLen = DefaultMaxTableLen
	}
	if o.PoolSize <= 0 {
		o.PoolSize = DefaultPoolSize
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	return &Sandbox{opts: o, pool: make(chan *state, o.PoolSize)}
}

// Options returns the sandbox's effective options.
func (s *Sandbox) Options() Options { return s.opts }

// Close drops the idle states.
func (s *Sandbox) Close() {
	for {
		select {
		case st := <-s.pool:
			st.L.Close()
		default:
			return
		}
	}
}

func (s *Sandbox) get() *state {
	select {
	case st := <-s.pool:
		return st
	default:
		return newState(s)
	}
}

func (s *Sandbox) put(st *state) {
	st.reset()
	select {
	case s.pool <- st:
	default:
		st.L.Close()
	}
}

// Chunk is Lua code compiled once (at config load).
type Chunk struct {
	name  string
	src   string
	proto *glua.FunctionProto
	refs  Refs
	expr  bool

	pathRoot string
	pathKeys []any
	isPath   bool
	globals  []string // of an expression (CompileExpr)
}

// Name is the chunk name used in Lua error messages (the config path).
func (c *Chunk) Name() string { return c.name }

// Source is the chunk's code.
func (c *Chunk) Source() string { return c.src }

// Refs is the static analysis of the chunk.
func (c *Chunk) Refs() Refs { return c.refs }

// SyntaxError is a chunk that does not compile.
type SyntaxError struct {
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

// UnknownNameError is a chunk that uses a kong.* or ngx.* name sidecall
// does not provide (see Names); Line is the chunk's line.
type UnknownNameError struct {
	Name string // the call or reference, e.g. "ngx.location.capture"
	Line int
}

func (e *UnknownNameError) Error() string {
	return fmt.Sprintf("line %d: %s is not provided by sidecall (see docs/lua.md)", e.Line, e.Name)
}

// checkNames refuses calls of unknown kong.*/ngx.* names and references
// to unknown fields of a PDK module (kong.request.get_hedaer); plain
// reads at the top (if ngx.config then) stay allowed, as they are nil.
func checkNames(r Refs) error {
	for _, u := range r.Uses {
		if u.Path == "ngx.ctx.balancer_data" || strings.HasPrefix(u.Path, "ngx.ctx.balancer_data.") {
			// Kong's balancer state: Envoy's route and cluster own timeouts and retries
			return &UnknownNameError{Name: "ngx.ctx.balancer_data", Line: u.Line}
		}
		ok, unknown := Provided(u.Path)
		if ok && u.Call && namespaces[u.Path] && u.Path != "kong.log" {
			return &UnknownNameError{Name: u.Path, Line: u.Line} // a table, not a function
		}
		if ok {
			continue
		}
		parent := unknown[:strings.LastIndexByte(unknown, '.')]
		if u.Call || strings.Contains(parent, ".") {
			return &UnknownNameError{Name: u.Path, Line: u.Line}
		}
	}
	return nil
}

// RuntimeError is a Lua error raised while a chunk ran.
type RuntimeError struct {
	Chunk string
	Msg   string
}

func (e *RuntimeError) Error() string { return "lua error in " + e.Chunk + ": " + e.Msg }

// TimeoutError is a chunk stopped by its time limit or, when
// Instructions is not zero, by its instruction budget (of that many
// instructions; Limit is then the time limit it did not reach).
type TimeoutError struct {
	Chunk        string
	Limit        time.Duration
	Instructions int64
}

func (e *TimeoutError) Error() string {
	if e.Instructions > 0 {
		return fmt.Sprintf("lua chunk %s stopped after its budget of %d instructions", e.Chunk, e.Instructions)
	}
	return fmt.Sprintf("lua chunk %s stopped after %s time limit", e.Chunk, e.Limit)
}

// Budget tells whether the instruction budget, not the clock, stopped the
// chunk.
func (e *TimeoutError) Budget() bool { return e.Instructions > 0 }

// Compile parses and compiles a chunk (statements). name appears in error
// messages; use the config path.
func Compile(src, name string) (*Chunk, error) {
	stmts, err := parseLua(src, name)
	if err != nil {
		return nil, err
	}
	if err := checkChunkGlobals(stmts); err != nil {
		return nil, err
	}
	return compile(stmts, src, name, false)
}

// CompileExpr compiles one Lua expression, evaluated with Eval.
func CompileExpr(src, name string) (*Chunk, error) {
	stmts, err := parseLua("return ("+src+"\n)", name)
	if err != nil {
		return nil, err
	}
	var e ast.Expr
	if len(stmts) == 1 {
		if r, ok := stmts[0].(*ast.ReturnStmt); ok && len(r.Exprs) == 1 {
			e = r.Exprs[0]
		}
	}
	if e == nil {
		return nil, &SyntaxError{Msg: "not a single expression"}
	}
	g := globals(stmts) // before compile rewrites concatenations
	c, err := compile(stmts, src, name, true)
	if err != nil {
		return nil, err
	}
	c.pathRoot, c.pathKeys, c.isPath = plainPath(e)
	c.globals = g
	return c, nil
}

// PlainPath tells whether an expression chunk is a plain path: an
// identifier followed by constant keys (a.b["c"][1]). Keys are strings or
// float64 numbers.
func (c *Chunk) PlainPath() (root string, keys []any, ok bool) {
	return c.pathRoot, c.pathKeys, c.isPath
}

func plainPath(e ast.Expr) (string, []any, bool) {
	var keys []any
	for {
		switch t := e.(type) {
		case *ast.IdentExpr:
			for i, j := 0, len(keys)-1; i < j; i, j = i+1, j-1 {
				keys[i], keys[j] = keys[j], keys[i]
			}
			return t.Value, keys, true
		case *ast.AttrGetExpr:
			switch k := t.Key.(type) {
			case *ast.StringExpr:
				keys = append(keys, k.Value)
			case *ast.NumberExpr:
				f, err := strconv.ParseFloat(k.Value, 64)
				if err != nil {
					return "", nil, false
				}
				keys = append(keys, f)
			default:
				return "", nil, false
			}
			e = t.Object
		default:
			return "", nil, false
		}
	}
}

func parseLua(src, name string) (stmts []ast.Stmt, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &SyntaxError{Msg: fmt.Sprint(r)}
		}
	}()
	stmts, err = parse.Parse(strings.NewReader(src), name)
	if err != nil {
		var pe *parse.Error
		if errors.As(err, &pe) {
			line := pe.Pos.Line
			if line < 0 {
				line = strings.Count(src, "\n") + 1
			}
			msg := pe.Message
			if pe.Token != "" {
				msg += " near '" + pe.Token + "'"
			}
			return nil, &SyntaxError{Line: line, Msg: msg}
		}
		return nil, &SyntaxError{Msg: err.Error()}
	}
	return stmts, nil
}

func compile(stmts []ast.Stmt, src, name string, isExpr bool) (c *Chunk, err error) {
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, &SyntaxError{Msg: fmt.Sprint(r)}
		}
	}()
	refs := analyze(stmts)
	if err := checkNames(refs); err != nil {
		return nil, err
	}
	guardConcat(stmts)
	proto, err := glua.Compile(stmts, name)
	if err != nil {
		var ce *glua.CompileError
		if errors.As(err, &ce) {
			return nil, &SyntaxError{Line: ce.Line, Msg: ce.Message}
		}
		return nil, &SyntaxError{Msg: err.Error()}
	}
	return &Chunk{name: name, src: src, proto: proto, refs: refs, expr: isExpr}, nil
}

// maxKeptFns bounds the handlers a state keeps (chunks of old configs
// would otherwise pile up across reloads).
const maxKeptFns = 256

func (s *state) keepFn(c *Chunk, f *glua.LFunction) {
	if s.fns == nil || len(s.fns) >= maxKeptFns {
		s.fns = map[*Chunk]*glua.LFunction{}
	}
	s.fns[c] = f
}

var callErr = regexp.MustCompile(`:(\d+): attempt to call a non-function object`)

// nameCall adds the name of the function called to gopher-lua's "attempt
// to call a non-function object", from the calls on that line.
func (c *Chunk) nameCall(msg string) string {
	m := callErr.FindStringSubmatchIndex(msg)
	if m == nil {
		return msg
	}
	line, _ := strconv.Atoi(msg[m[2]:m[3]])
	names := c.refs.Calls[line]
	if len(names) == 0 {
		return msg
	}
	var missing []string
	for _, n := range names {
		if ok, _ := Provided(strings.ReplaceAll(n, ":", ".")); !ok || !strings.HasPrefix(n, "kong.") && !strings.HasPrefix(n, "ngx.") {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		missing = names
	}
	return msg[:m[1]] + " (" + strings.Join(missing, " or ") + " is nil; see docs/lua.md for what sidecall provides)" + msg[m[1]:]
}

// Run runs c with the PDK bound to h. kong.response.exit stops the chunk
// and returns nil (h.Exit was called). Errors are *RuntimeError or
// *TimeoutError (the time limit or the instruction budget), or the parent
// context's error.
func (s *Sandbox) Run(ctx context.Context, c *Chunk, h Host) error {
	_, err := s.call(ctx, c, h, nil)
	return err
}

// Eval evaluates an expression chunk (CompileExpr) in the read-only
// template environment and returns its value as a Go value (see ToGo).
func (s *Sandbox) Eval(ctx context.Context, c *Chunk, h Host, v *Vars) (any, error) {
	if v == nil {
		v = &Vars{}
	}
	return s.call(ctx, c, h, v)
}

func (s *Sandbox) call(ctx context.Context, c *Chunk, h Host, vars *Vars) (out any, err error) {
	if c == nil {
		return nil, errors.New("lua: nil chunk")
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st := s.get()
	cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()
	healthy := false
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, &RuntimeError{Chunk: c.name, Msg: fmt.Sprintf("panic: %v", r)}
			healthy = false
		}
		if healthy {
			s.put(st)
		} else {
			st.L.Close()
		}
	}()
	st.begin(cctx, h, vars)
	st.chunk = c
	L := st.L
	fn, made := st.fns[c]
	if !made {
		fn = L.NewFunctionFromProto(c.proto)
		if vars != nil {
			fn.Env = st.tplEnv
		} else {
			fn.Env = st.newChunkEnv()
		}
	}
	L.SetContext(st.ctx) // the budget over cctx
	L.Push(fn)
	perr := L.PCall(0, 1, st.keepErr)
	if f, ok := L.Get(-1).(*glua.LFunction); perr == nil && !made && !c.expr && ok && !st.exited {
		// Kong's form "return function() ... end": the chunk made the
		// request handler; keep it (and its upvalues) for this state's
		// later calls and run it for this request.
		L.Pop(1)
		st.keepFn(c, f)
		L.Push(f)
		perr = L.PCall(0, 1, st.keepErr)
	}
	if perr == nil && !st.exited && st.said && h != nil {
		if p := h.Phase(); p == "rewrite" || p == "access" {
			st.sayReply(h, 0) // ngx.say/print output answers at the chunk's end
			st.exited = true
		}
	}
	L.RemoveContext()
	exited := st.exited
	if perr == nil && c.expr {
		var cerr error
		if out, cerr = st.toGoErr(L.Get(-1), 0); cerr != nil {
			perr = cerr
		}
	}
	st.flush()
	if perr == nil && st.bud.over {
		perr = errBudget // spent converting values back to Go (flush or the result)
	}
	L.SetTop(0)
	if exited {
		healthy = true
		return nil, nil
	}
	if perr != nil {
		if st.bud.over || cctx.Err() != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if st.bud.over {
				return nil, &TimeoutError{Chunk: c.name, Limit: s.opts.Timeout, Instructions: s.opts.Instructions}
			}
			return nil, &TimeoutError{Chunk: c.name, Limit: s.opts.Timeout}
		}
		healthy = true
		var ae *glua.ApiError
		msg := perr.Error()
		if errors.As(perr, &ae) && ae.Object != nil {
			msg = ae.Object.String()
		}
		return nil, &RuntimeError{Chunk: c.name, Msg: c.nameCall(msg)}
	}
	healthy = true
	return out, nil
}
