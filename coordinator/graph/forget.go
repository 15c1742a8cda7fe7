package graph

import (
	"math/bits"
	"slices"
)

// Forgetting. Services and versions are numbered densely, and the numbers
// index every bitset (succ, reach, block sets) and per-service slice of the
// engine. A removed service's number goes to a free list and is given to
// the next service interned, so the bitsets stay as wide as the most
// services known at once, not as the most ever known. Before a number is
// reused nothing may still refer to it:
//
//   - no live transaction has used the service (used, and so running subs
//     and block sets, which are within used), nor has it as entry;
//   - a live transaction that may still call it (it is in F(T)) may reach
//     through it only services removed with it: F(T) then loses only
//     services T did not use, so no block set changes (a block set is
//     within used);
//   - its edges go both ways, and every reach set that held it is computed
//     again without it;
//   - the Done hints naming it, applied, waiting for their sub or for their
//     transaction, are dropped: a hint only ever makes a service less
//     blocked, and one left behind would apply to the service given the
//     number next. Dropping a hint is sound (a hint never given).
//
// A removed version must be used by no live transaction; the owner makes
// sure nothing else it keeps (routes, sessions, updates) names it.

// RemoveServices removes the services of ids that no live transaction has
// used, and that no live transaction may still reach other than those
// removed with them (see above), with their static edges, and returns
// those it removed; the others stay as they are. Unknown ids are skipped. A removed
// id is invalid until Service gives it to a new name. O(live × running subs
// × words + removed × services × words).
func (e *Engine) RemoveServices(ids []ServiceID) []ServiceID {
	k := make([]uint64, e.words) // candidates
	some := false
	for _, s := range ids {
		if e.validSvc(s) && e.usedN[s] == 0 && len(e.blockers[s]) == 0 {
			k[s>>6] |= 1 << (s & 63)
			some = true
		}
	}
	if !some {
		return nil
	}
	// u: the services some live transaction may still call.
	u := make([]uint64, e.words)
	for _, t := range e.txns {
		k[t.entry>>6] &^= 1 << (t.entry & 63)
		if t.flags&txLegacy != 0 {
			continue // blocks every service whatever the edges; used is excluded above
		}
		f := e.bufF
		clear(f)
		e.future(t, e.running(t), f)
		or(u, f)
	}
	// A candidate some transaction may call goes only if all it reaches
	// goes too: then what the transaction may call loses only services
	// nobody used, and no block set changes. (A name called over a
	// learned edge, a sink, goes; calling it again learns the edge again,
	// which makes the transaction legacy.) Dropping one candidate may
	// keep another: to a fixpoint.
	for changed := true; changed; {
		changed = false
		for _, c := range members(k) {
			if !has(u, c) {
				continue
			}
			for i, w := range e.reach[c] {
				if w&^k[i] != 0 {
					k[c>>6] &^= 1 << (c & 63)
					changed = true
					break
				}
			}
		}
	}
	removed := members(k)
	if len(removed) == 0 {
		return nil
	}
	for _, s := range removed {
		clear(e.succ[s])
	}
	for x := range e.succ {
		for i := range e.succ[x] { // as long as its members need: at most k's
			e.succ[x][i] &^= k[i]
		}
	}
	// Reach sets that held a removed service may have reached others only
	// through it: compute them again. The others are unchanged.
	for x, r := range e.reach {
		hit := false
		for i := range r {
			if r[i]&k[i] != 0 {
				hit = true
				break
			}
		}
		if hit || has(k, ServiceID(x)) {
			e.reach[x] = e.reachFrom(ServiceID(x), r)
		}
	}
	for _, t := range e.txns {
		t.hints = slices.DeleteFunc(t.hints, func(h hint) bool { return has(k, h.to) })
		t.early = slices.DeleteFunc(t.early, func(h hint) bool { return has(k, h.to) })
	}
	for _, gen := range [2]map[string][]hint{e.orphans, e.oldOrphans} {
		for id, hs := range gen {
			if hs = slices.DeleteFunc(hs, func(h hint) bool { return has(k, h.to) }); len(hs) == 0 {
				delete(gen, id)
			} else {
				gen[id] = hs
			}
		}
	}
	for _, s := range removed {
		delete(e.svcIDs, e.svcNames[s])
		e.svcNames[s] = ""
		e.svcGone[s] = true
		e.svcFree = append(e.svcFree, s)
	}
	return removed
}

// reachFrom computes the services reachable from x by at least one static
// edge, into r (grown as needed), and returns it.
func (e *Engine) reachFrom(x ServiceID, r []uint64) []uint64 {
	clear(r)
	stack := members(e.succ[x])
	r = orGrow(r, e.succ[x])
	for len(stack) > 0 {
		y := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if len(e.succ[y]) > len(r) {
			r = append(r, make([]uint64, len(e.succ[y])-len(r))...)
		}
		for i, w := range e.succ[y] {
			for nw := w &^ r[i]; nw != 0; nw &= nw - 1 {
				stack = append(stack, ServiceID(i*64+bits.TrailingZeros64(nw)))
			}
			r[i] |= w
		}
	}
	return r
}

// RemoveVersion removes version v if no live transaction has used a service
// at it, and reports whether it did. The empty version (0) stays. A removed
// id is invalid until Version gives it to a new name.
func (e *Engine) RemoveVersion(v VersionID) bool {
	if v == 0 || !e.validVer(v) || e.verN[v] > 0 {
		return false
	}
	delete(e.verIDs, e.verNames[v])
	e.verNames[v] = ""
	e.verFree = append(e.verFree, v)
	return true
}

// VersionUsers returns how many first uses of live transactions are at
// version v.
func (e *Engine) VersionUsers(v VersionID) int {
	if !e.validVer(v) {
		return 0
	}
	return e.verN[v]
}

// ServiceIDBound is one more than the highest service id ever given: the
// live services are the ids below it for which ValidService holds.
func (e *Engine) ServiceIDBound() int { return len(e.svcNames) }

// VersionIDBound is one more than the highest version id ever given; a
// removed one has the name "".
func (e *Engine) VersionIDBound() int { return len(e.verNames) }

// ValidService reports whether s names a service (interned, not removed).
func (e *Engine) ValidService(s ServiceID) bool { return e.validSvc(s) }
