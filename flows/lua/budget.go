package lua

import (
	"context"
	"errors"

	glua "github.com/yuin/gopher-lua"
)

// budget is the context a call's Lua state runs under. gopher-lua's VM
// (mainLoopWithContext) selects on ctx.Done() before every instruction, so
// Done counts the instructions: once the call's instruction budget is
// spent it returns a closed channel and the VM raises Err, as it does for
// the time limit. Otherwise it is the call's time-limited context.
//
// A budget belongs to one pooled state and is used only on the goroutine
// running the call (the VM, the pattern matcher and pcall's guard), so
// its counter needs no atomics; it must not be handed to anything that
// could watch it from another goroutine (context.WithCancel of it would).
type budget struct {
	context.Context                 // the call's context with its time limit
	done            <-chan struct{} // Context.Done(), fetched once
	left            int64           // instructions left
	limit           int64
	over            bool
}

// errBudget is the error the VM raises when the budget is spent.
var errBudget = errors.New("instruction budget exceeded")

// closedDone is the Done of a spent budget.
var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (b *budget) start(ctx context.Context, limit int64) {
	b.Context, b.done, b.left, b.limit, b.over = ctx, ctx.Done(), limit, limit, false
}

func (b *budget) stop() { b.Context, b.done = nil, nil }

// Done is called once per VM instruction (and every 1024 steps of the
// pattern matcher).
func (b *budget) Done() <-chan struct{} {
	b.left--
	if b.left < 0 {
		b.over = true
		return closedDone
	}
	return b.done
}

func (b *budget) Err() error {
	if b.over {
		return errBudget
	}
	return b.Context.Err()
}

// used is the number of instructions spent so far.
func (b *budget) used() int64 { return b.limit - b.left }

// bytesPerInstruction is what a library call is charged for what it
// builds: one instruction per this many bytes of new strings (16 bytes a
// result or list item). With the default budget a call can build about
// 15 MiB of strings (a 4 MiB body read, rewritten and encoded fits). A VM
// instruction allocates at most about 60 bytes (table bombs measured 25
// to 60 bytes an instruction, amortised).
const bytesPerInstruction = 32

// spend charges n instructions' worth of work done in Go. Once the budget
// is spent it is marked over (the VM stops the chunk at its next
// instruction, guard re-raises it past pcall) and spend returns false, so
// long Go loops can stop at once.
func (b *budget) spend(n int64) bool {
	if b.Context == nil {
		return true
	}
	b.left -= n
	if b.left < 0 {
		b.over = true
		return false
	}
	return true
}

// chargeBytes charges a library call for n bytes it built.
func (s *state) chargeBytes(n int) {
	if n >= bytesPerInstruction {
		s.bud.spend(int64(n / bytesPerInstruction))
	}
}

// metered wraps a library function that builds new values (strings,
// tables, many results) so that the call is charged for them.
func (s *state) metered(f glua.LGFunction) glua.LGFunction {
	return func(L *glua.LState) int {
		n := f(L)
		top := L.GetTop()
		size := 16 * n
		for i := top - n + 1; i <= top; i++ {
			switch v := L.Get(i).(type) {
			case glua.LString:
				size += len(v)
			case *glua.LTable:
				size += 16 * v.Len()
			}
		}
		s.chargeBytes(size)
		return n
	}
}

// meter replaces the named functions of t with metered ones.
func (s *state) meter(t *glua.LTable, names ...string) {
	for _, name := range names {
		if f, ok := t.RawGetString(name).(*glua.LFunction); ok && f.IsG {
			t.RawSetString(name, s.L.NewFunction(s.metered(f.GFunction)))
		}
	}
}

// afford charges a call for n values before it builds them (unpack and
// string.byte put them all on the stack in one go), stopping the chunk
// at once when the budget cannot pay.
func (s *state) afford(L *glua.LState, n int) {
	if n > 0 && !s.bud.spend(int64(n*16/bytesPerInstruction)) {
		L.RaiseError("%s", errBudget.Error())
	}
}

// span is the number of items from i to j (Lua's negative positions count
// from the end of a sequence of length n), clamped to 1..n.
func span(i, j, n int) int {
	if i < 0 {
		i = n + i + 1
	}
	if j < 0 {
		j = n + j + 1
	}
	i, j = max(i, 1), min(j, n)
	return max(j-i+1, 0)
}
