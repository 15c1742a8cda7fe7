package graph

// Set freeness (DESIGN.md §4.8). A set of services updated together is free
// when no live transaction has used one service of the set and may still
// call one (the same or another): past(T) ∩ set ≠ ∅ and (F(T) ∪ R(T)) ∩ set
// ≠ ∅, R(T) being where T runs now. For a set of one service this is
// exactly block(T) ∋ s (R(T) ⊆ past(T)), so these functions answer as Free,
// BlockerCount and AnyBlockerUsing do, through the blocker index, in O(1)
// or O(blockers); for a larger set they scan the live transactions that
// used a service of the set: O(live × running subs × words).

// FreeSet reports whether no live transaction blocks the set.
func (e *Engine) FreeSet(set []ServiceID) bool {
	if len(set) == 1 {
		return e.Free(set[0])
	}
	if len(e.legacy) > 0 {
		return false
	}
	for _, s := range set {
		if e.validSvc(s) && len(e.blockers[s]) > 0 {
			return false // blocks s itself: blocks the set
		}
	}
	free := true
	e.eachSetBlocker(set, func(*txn) bool { free = false; return false })
	return free
}

// SetBlockerCount returns how many live transactions block the set (every
// legacy one among them).
func (e *Engine) SetBlockerCount(set []ServiceID) int {
	if len(set) == 1 {
		return e.BlockerCount(set[0])
	}
	n := len(e.legacy)
	e.eachSetBlocker(set, func(*txn) bool { n++; return true })
	return n
}

// SetBlockersUsing counts the transactions blocking the set that used one
// of its services at the version uses names for it (one side of the set:
// its old versions, or its new ones), counting every legacy transaction.
// The side is drained when this is zero.
func (e *Engine) SetBlockersUsing(uses []Use) int {
	if len(uses) == 1 {
		return e.BlockersUsing(uses[0].Service, uses[0].Version)
	}
	n := len(e.legacy)
	e.eachSetBlocker(servicesOf(uses), func(t *txn) bool {
		if usedAny(t, uses) {
			n++
		}
		return true
	})
	return n
}

// AnySetBlockerUsing reports whether SetBlockersUsing(uses) > 0, stopping
// at the first such transaction.
func (e *Engine) AnySetBlockerUsing(uses []Use) bool {
	if len(uses) == 1 {
		return e.AnyBlockerUsing(uses[0].Service, uses[0].Version)
	}
	if len(e.legacy) > 0 {
		return true
	}
	for _, u := range uses {
		if e.AnyBlockerUsing(u.Service, u.Version) {
			return true // blocks a member itself, having used it on this side
		}
	}
	found := false
	e.eachSetBlocker(servicesOf(uses), func(t *txn) bool {
		found = usedAny(t, uses)
		return !found
	})
	return found
}

// SetSide returns the version txn first used a service of the set at, and
// that service: the first of uses (in the transaction's order of first
// use) that names a service of set. ok is false if it used none.
func (e *Engine) SetSide(txn string, set []ServiceID) (Use, bool) {
	t := e.txns[txn]
	if t == nil {
		return Use{}, false
	}
	for _, u := range t.used {
		for _, s := range set {
			if u.Service == s {
				return u, true
			}
		}
	}
	return Use{}, false
}

// eachSetBlocker calls fn for each live non-legacy transaction that blocks
// the set, until fn returns false.
func (e *Engine) eachSetBlocker(set []ServiceID, fn func(*txn) bool) {
	for _, t := range e.txns {
		if t.flags&txLegacy != 0 || !usedSome(t, set) {
			continue
		}
		if e.mayCallSome(t, set) && !fn(t) {
			return
		}
	}
}

// mayCallSome reports whether t runs at, or may still call, a service of
// set: (F(T) ∪ R(T)) ∩ set ≠ ∅.
func (e *Engine) mayCallSome(t *txn, set []ServiceID) bool {
	r := e.running(t)
	for _, s := range set {
		if e.validSvc(s) && has(r, s) {
			return true
		}
	}
	f := e.bufF
	clear(f)
	e.future(t, r, f)
	for _, s := range set {
		if e.validSvc(s) && has(f, s) {
			return true
		}
	}
	return false
}

func usedSome(t *txn, set []ServiceID) bool {
	for _, u := range t.used {
		for _, s := range set {
			if u.Service == s {
				return true
			}
		}
	}
	return false
}

func usedAny(t *txn, uses []Use) bool {
	for _, u := range t.used {
		for _, w := range uses {
			if u == w {
				return true
			}
		}
	}
	return false
}

func servicesOf(uses []Use) []ServiceID {
	out := make([]ServiceID, len(uses))
	for i, u := range uses {
		out[i] = u.Service
	}
	return out
}
