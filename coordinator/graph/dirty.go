package graph

import "math"

// Record is a change of a transaction's stored record: a put of its current
// state, or its deletion.
type Record struct {
	Txn     string
	Deleted bool
	Owner   Owner
	Entry   ServiceID
	Legacy  bool
	Used    []Use // read-only, valid only during the TakeDirty callback
}

// DirtyLen returns how many records TakeDirty would emit with no limit.
func (e *Engine) DirtyLen() int { return e.dirty }

// TakeDirty emits, oldest change first, at most limit records of transactions
// that changed since they were last taken, and returns how many it emitted.
// Begin, AddLegacy and any change of a used set make a put; End of a
// transaction that was ever taken makes a deletion, and one that was not is
// never emitted. No transaction id is emitted twice in one call. fn must not
// call the engine.
func (e *Engine) TakeDirty(limit int, fn func(r Record)) int {
	return e.TakeDirtyBefore(math.MaxUint64, limit, fn)
}

// SetEpoch sets the epoch stamped on transactions from now on as they are
// queued for TakeDirty. Epochs must not decrease. The owner uses a clock
// (e.g. flush intervals since start) so that TakeDirtyBefore can leave
// young changes queued.
func (e *Engine) SetEpoch(epoch uint64) { e.epoch = epoch }

// TakeDirtyBefore is TakeDirty limited to transactions queued in an epoch
// before the given one. A write-behind that takes only changes at least one
// flush interval old never writes a transaction shorter than that interval:
// its End arrives while it is still queued.
func (e *Engine) TakeDirtyBefore(epoch uint64, limit int, fn func(r Record)) int {
	n := 0
	for n < limit && e.qhead < len(e.queue) && e.queue[e.qhead].epoch < epoch {
		t := e.queue[e.qhead]
		e.queue[e.qhead] = nil
		e.qhead++
		dirty, ended := t.flags&txDirty != 0, t.flags&txEnded != 0
		t.flags &^= txDirty
		switch {
		case dirty && ended:
			delete(e.pendingDel, t.id)
			fn(Record{Txn: t.id, Deleted: true})
		case dirty:
			t.flags |= txEmitted
			fn(Record{Txn: t.id, Owner: t.owner, Entry: t.entry, Legacy: t.flags&txLegacy != 0, Used: t.used})
		}
		if dirty {
			e.dirty--
			n++
		}
		if ended {
			e.recycle(t)
		}
	}
	if e.qhead > len(e.queue)/2 {
		m := copy(e.queue, e.queue[e.qhead:])
		clear(e.queue[m:])
		e.queue, e.qhead = e.queue[:m], 0
	}
	return n
}
