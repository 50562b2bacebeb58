package processor

import (
	"sync"
	"sync/atomic"

	"github.com/sidecall/sidecall/flows"
)

// held is a snapshot with a count of streams using it, so a retired
// snapshot is closed only after its streams finish.
type held struct {
	snap    *flows.Snapshot
	refs    atomic.Int64
	retired atomic.Bool
	once    sync.Once
}

func (h *held) release() {
	if h.refs.Add(-1) == 0 && h.retired.Load() {
		h.once.Do(h.snap.Close)
	}
}

// Holder holds the serving snapshot and swaps it atomically.
type Holder struct{ cur atomic.Pointer[held] }

// Swap installs s and retires the previous snapshot.
func (hd *Holder) Swap(s *flows.Snapshot) {
	old := hd.cur.Swap(&held{snap: s})
	if old != nil {
		old.retired.Store(true)
		if old.refs.Load() == 0 {
			old.once.Do(old.snap.Close)
		}
	}
}

// Current returns the serving snapshot (nil before the first load).
func (hd *Holder) Current() *flows.Snapshot {
	if h := hd.cur.Load(); h != nil {
		return h.snap
	}
	return nil
}

func (hd *Holder) acquire() *held {
	for {
		h := hd.cur.Load()
		if h == nil {
			return nil
		}
		h.refs.Add(1)
		if hd.cur.Load() == h {
			return h
		}
		h.release()
	}
}
