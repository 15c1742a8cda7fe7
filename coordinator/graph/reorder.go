package graph

import "slices"

// Events of one transaction come from several streams, each in its own
// order: the caller's sidecar sends the Call and the Return of a
// sub-transaction, the callee's sidecar its nested Calls and its Done hints,
// the entry's sidecar Begin and End. Once every event has arrived, the engine
// must be where in-order delivery would have left it, so that freeness is
// not more pessimistic than it has to be. Two orders need memory to get
// there:
//
//   - a Return before a nested Call of the returned sub (sent by the
//     callee): the returned id is remembered, so the Call does not start it
//     again (it would then run, and block, until the transaction ends);
//   - a Done before the Call of its sub: the hint is kept until the sub
//     starts, then applied.
//
// Both are bounded per transaction and go with it. Past the bounds the
// engine stays sound, only more pessimistic: a forgotten returned id may be
// started again by a late Call, and a dropped hint is a hint never given.
const (
	// maxReturned bounds the returned sub ids remembered per transaction;
	// at least the newest maxReturned/2 are.
	maxReturned = 1024
	// maxEarly bounds the Done hints waiting for their sub per transaction
	// (and per transaction not seen yet).
	maxEarly = 64
	// maxOrphans bounds the transactions not seen yet that have waiting
	// hints, per generation; at most twice as many are kept.
	maxOrphans = 4096
)

// ReorderStats counts the Done hints that came before the Call of their
// sub-transaction. Deferred = applied + dropped + still waiting.
type ReorderStats struct {
	EarlyDone        uint64 // kept to apply when the sub-transaction starts
	EarlyDoneApplied uint64 // applied as it started
	EarlyDoneDropped uint64 // gone unapplied: the transaction ended, or was never seen and forgotten
	EarlyDoneRefused uint64 // gone unapplied: sent by another service than the one its sub started at
}

// ReorderStats returns the counts since the engine was made.
func (e *Engine) ReorderStats() ReorderStats { return e.reorder }

func (t *txn) wasReturned(sub SubID) bool { return slices.Contains(t.returned, sub) }

// remember records that sub returned, forgetting the older half of the ids
// once maxReturned are kept.
func (t *txn) remember(sub SubID) {
	if len(t.returned) == maxReturned {
		n := copy(t.returned, t.returned[maxReturned/2:])
		t.returned = t.returned[:n]
	}
	t.returned = append(t.returned, sub)
}

// applyEarly makes the hints that waited for sub, which has just started,
// hints of sub.
func (e *Engine) applyEarly(t *txn, sub SubID) {
	if len(t.early) == 0 {
		return
	}
	var svc ServiceID
	if i := t.findSub(sub); i >= 0 {
		svc = t.subs[i].svc
	}
	j := 0
	for _, h := range t.early {
		if h.sub != sub {
			t.early[j] = h
			j++
			continue
		}
		if h.by != noService && h.by != svc {
			e.reorder.EarlyDoneRefused++ // sent by another service than sub's
			continue
		}
		h.by = 0
		if !slices.Contains(t.hints, h) {
			t.hints = append(t.hints, h)
		}
		e.reorder.EarlyDoneApplied++
	}
	t.early = t.early[:j]
}

// deferEarly keeps h, whose sub t has not started, until it does.
func (e *Engine) deferEarly(t *txn, h hint) error {
	if slices.Contains(t.early, h) {
		return nil
	}
	if len(t.early) >= maxEarly {
		return ErrEarlyLimit
	}
	t.early = append(t.early, h)
	e.reorder.EarlyDone++
	return nil
}

// deferOrphan keeps h for the transaction id, not seen yet, until it starts.
func (e *Engine) deferOrphan(id string, h hint) error {
	gen := e.orphans
	hs, ok := gen[id]
	if !ok {
		if hs, ok = e.oldOrphans[id]; ok {
			gen = e.oldOrphans
		}
	}
	if slices.Contains(hs, h) {
		return nil
	}
	if len(hs) >= maxEarly {
		return ErrEarlyLimit
	}
	if !ok && len(e.orphans) >= maxOrphans {
		for _, old := range e.oldOrphans { // forget the older generation
			e.reorder.EarlyDoneDropped += uint64(len(old))
		}
		clear(e.oldOrphans)
		e.orphans, e.oldOrphans = e.oldOrphans, e.orphans
		gen = e.orphans
	}
	gen[id] = append(hs, h)
	e.reorder.EarlyDone++
	return nil
}

// takeOrphans gives t, just started, the hints that waited for it.
func (e *Engine) takeOrphans(t *txn) {
	for _, gen := range [2]map[string][]hint{e.orphans, e.oldOrphans} {
		if hs, ok := gen[t.id]; ok {
			t.early = append(t.early, hs...)
			delete(gen, t.id)
		}
	}
}
