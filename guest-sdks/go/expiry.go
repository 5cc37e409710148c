package wallaroo

// State that expires (ExpireAfter): the keys of a state step in the order their state expires,
// and their expiry when Advance's watermark reaches it.
//
// A key's deadline is its last-seen time (the max event time of its messages at the step)
// plus the step's `after`. Each key has at most one entry in its step's heap that counts, for
// the deadline it was queued at; a message moves the deadline later without touching the heap,
// and popping an entry whose key's deadline has moved queues the key again. So a message costs
// a heap push only when its key has no entry, and Advance looks at the keys that are due and no
// others.

import (
	"container/heap"
	"math"
)

// expiringStore is a state step with ExpireAfter: its store and the deadlines of its keys.
type expiringStore struct {
	id   uint32
	st   *store
	e    *expiry
	emit func(any) // the step's downstream, which onExpire's results go to
	heap expiryHeap
	// unstamped holds the keys restored without a last-seen time before the instance's first
	// Advance, which stamps them with its watermark (see Restore).
	unstamped []*slot
}

type expiryEntry struct {
	due uint64
	sl  *slot
}

// expiryHeap orders entries by deadline, then key.
type expiryHeap []expiryEntry

func (h expiryHeap) Len() int { return len(h) }
func (h expiryHeap) Less(i, j int) bool {
	return h[i].due < h[j].due || h[i].due == h[j].due && h[i].sl.key < h[j].sl.key
}
func (h expiryHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *expiryHeap) Push(x any)   { *h = append(*h, x.(expiryEntry)) }
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = expiryEntry{}
	*h = old[:len(old)-1]
	return e
}

// deadline is when sl's state expires: its last-seen time plus the step's after, at most the
// end of every stream.
func (es *expiringStore) deadline(sl *slot) uint64 {
	if sl.lastSeen > math.MaxUint64-es.e.after {
		return math.MaxUint64
	}
	return sl.lastSeen + es.e.after
}

// seen records a message of event time t for sl's key.
func (es *expiringStore) seen(sl *slot, t uint64) {
	if !sl.stamped || t > sl.lastSeen {
		sl.lastSeen = t
	}
	sl.stamped = true
	es.queue(sl)
}

// queue makes sure that sl has a heap entry no later than its deadline.
func (es *expiringStore) queue(sl *slot) {
	due := es.deadline(sl)
	if sl.inHeap && sl.queued <= due {
		return
	}
	sl.inHeap, sl.queued = true, due
	heap.Push(&es.heap, expiryEntry{due, sl})
}

// stamp gives the keys restored without a last-seen time the watermark as theirs, and reports
// them changed: the host's copy has no time yet.
func (r *Runtime) stamp(es *expiringStore) {
	for _, sl := range es.unstamped {
		if sl.live && !sl.stamped {
			sl.lastSeen, sl.stamped = r.watermark, true
			r.markChanged(sl)
			es.queue(sl)
		}
	}
	es.unstamped = nil
}

// expireKeys expires every key of es whose deadline the watermark has reached, in the order of
// their deadlines (then keys).
func (r *Runtime) expireKeys(es *expiringStore) {
	r.stamp(es)
	wm := r.watermark
	for len(es.heap) > 0 && es.heap[0].due <= wm {
		next := heap.Pop(&es.heap).(expiryEntry)
		sl := next.sl
		if !sl.live || !sl.inHeap || sl.queued != next.due {
			continue // stale: the key was taken, or queued again for another time
		}
		sl.inHeap = false
		if es.deadline(sl) != next.due {
			// A message moved it later: it takes its place in the order again, due or not.
			es.queue(sl)
			continue
		}
		r.expire(es, sl)
	}
}

// expire calls onExpire for sl's key, its outputs carrying the deadline as their event time,
// and removes the key's state. A failure (in onExpire or downstream) is reported with the key
// and no input, and costs the outputs of that one key.
func (r *Runtime) expire(es *expiringStore, sl *slot) {
	if fn := es.e.onExpire; fn != nil {
		r.key, r.eventTime = []byte(sl.key), es.deadline(sl)
		mark := len(r.out)
		f := r.guard(func() error {
			r.current = es.id
			err := fn(sl.key, sl.value, es.emit)
			return r.userError(es.id, es.e.where, err)
		})
		if f != nil {
			clear(r.out[mark:])
			r.out = append(r.out[:mark], Output{Kind: OutputFailed, Input: NoInput, Step: f.step, Key: sl.key, HasKey: true, Error: f.text})
		}
	}
	st := es.st
	delete(st.slots, sl.key)
	sl.live, sl.value = false, nil
	if sl.stored {
		// The host holds the key's state: the next snapshot tells it the state is gone.
		sl.expired = true
		st.gone[sl.key] = sl
		r.markChanged(sl)
	}
}
