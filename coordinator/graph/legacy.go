package graph

import "math/bits"

// MakeLegacyOwnedBy makes every live transaction owned by owner legacy: from
// now on each blocks every service, as one the engine did not see start
// does, until it ends. Self-preservation uses it for the transactions of a
// session whose lease expired (DESIGN.md §7): what they did while the
// coordinator could not hear them is unknown. Each is queued for the
// write-behind, already legacy ones too (their record is written again, on
// whatever lease the owner has by then). It returns how many there are.
// O(live).
func (e *Engine) MakeLegacyOwnedBy(owner Owner) int {
	n := 0
	for _, t := range e.txns {
		if t.owner != owner {
			continue
		}
		n++
		e.toLegacy(t)
		e.markDirty(t)
	}
	return n
}

// toLegacy moves t from the blocker index of the services it blocks to the
// legacy set, which blocks every service.
func (e *Engine) toLegacy(t *txn) {
	if t.flags&txLegacy != 0 {
		return
	}
	for i, w := range t.block {
		for ; w != 0; w &= w - 1 {
			s := ServiceID(i*64 + bits.TrailingZeros64(w))
			delete(e.blockers[s], t)
			e.countBlockUse(t, s, -1)
		}
	}
	t.block = t.block[:0]
	t.flags |= txLegacy
	e.legacy[t] = struct{}{}
}
