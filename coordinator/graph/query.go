package graph

import "slices"

// Blocker is a live transaction that keeps a service from being free, with
// the reason.
type Blocker struct {
	Txn         string
	Legacy      bool      // restored from storage: blocks every service
	Running     bool      // T runs at S now
	PastVersion VersionID // used[S], 0 if unset
	FutureVia   ServiceID // a running service of T from which S may still be called (S itself if running)
	FutureViaOK bool      // FutureVia is set; false only for a legacy T
}

// TxnInfo describes a live transaction.
type TxnInfo struct {
	ID                            string
	Entry                         ServiceID
	Owner                         Owner
	Legacy, Implicit, LearnedEdge bool
	Used                          []Use
	Running                       []SubInfo
	Blocks                        []ServiceID // block(T), every service if legacy
}

// SubInfo describes a running sub-transaction.
type SubInfo struct {
	ID      SubID
	Service ServiceID
	Done    []ServiceID // services it said it will not call again
}

// Free reports whether no live transaction has both a future and a past at
// s. O(1).
func (e *Engine) Free(s ServiceID) bool {
	return len(e.legacy) == 0 && (!e.validSvc(s) || len(e.blockers[s]) == 0)
}

// BlockerCount returns how many live transactions block s.
func (e *Engine) BlockerCount(s ServiceID) int {
	n := len(e.legacy)
	if e.validSvc(s) {
		n += len(e.blockers[s])
	}
	return n
}

// BlockersUsing counts the transactions blocking s that used it at version
// v, counting every legacy transaction (it is assumed to have used the
// version that was current). A service being drained of v is drained when
// this is zero. O(1) (the blockUse index).
func (e *Engine) BlockersUsing(s ServiceID, v VersionID) int {
	n := len(e.legacy)
	if !e.validSvc(s) {
		return n
	}
	return n + e.blockersAt(s, v)
}

// AnyBlockerUsing reports whether BlockersUsing(s, v) > 0. O(1): an
// update's progress asks it after every batch of events, under the event
// lock (it scanned every blocker of s, which at 100,000 live transactions
// held the lock for milliseconds per batch while an update drained).
func (e *Engine) AnyBlockerUsing(s ServiceID, v VersionID) bool {
	return e.BlockersUsing(s, v) > 0
}

// Blockers returns at most limit transactions blocking s, in no particular
// order, each with its reason. O(limit × running subs × words).
func (e *Engine) Blockers(s ServiceID, limit int) []Blocker {
	n := min(limit, e.BlockerCount(s))
	if n <= 0 {
		return nil
	}
	out := make([]Blocker, 0, n)
	for t := range e.legacy {
		if len(out) == n {
			return out
		}
		out = append(out, e.reason(t, s))
	}
	if e.validSvc(s) {
		for t := range e.blockers[s] {
			if len(out) == n {
				break
			}
			out = append(out, e.reason(t, s))
		}
	}
	return out
}

func (e *Engine) reason(t *txn, s ServiceID) Blocker {
	b := Blocker{Txn: t.id, Legacy: t.flags&txLegacy != 0}
	b.PastVersion, _ = t.version(s)
	if t.runsAt(s) {
		b.Running, b.FutureVia, b.FutureViaOK = true, s, true
		return b
	}
	f := e.bufF
	for _, sb := range t.subs {
		clear(f)
		e.futureOf(t, sb.svc, f)
		if has(f, s) {
			b.FutureVia, b.FutureViaOK = sb.svc, true
			break
		}
	}
	return b
}

// HasFuture reports whether txn may still create a sub-transaction at s (or
// runs there). O(running subs × words).
func (e *Engine) HasFuture(txn string, s ServiceID) bool {
	t := e.txns[txn]
	switch {
	case t == nil:
		return false
	case t.flags&txLegacy != 0 || t.runsAt(s):
		return true
	case !e.validSvc(s):
		return false
	}
	f := e.bufF
	clear(f)
	e.future(t, e.running(t), f)
	return has(f, s)
}

// HasPast reports whether txn has used s (which it does where it runs).
func (e *Engine) HasPast(txn string, s ServiceID) bool {
	t := e.txns[txn]
	if t == nil {
		return false
	}
	_, used := t.version(s)
	return used || t.flags&txLegacy != 0
}

// Used returns the version txn first used s at.
func (e *Engine) Used(txn string, s ServiceID) (VersionID, bool) {
	if t := e.txns[txn]; t != nil {
		return t.version(s)
	}
	return 0, false
}

// Live returns the number of live transactions.
func (e *Engine) Live() int { return len(e.txns) }

// Owned returns how many live transactions owner owns. O(1).
func (e *Engine) Owned(owner Owner) int { return e.owned[owner] }

// Has reports whether txn is live.
func (e *Engine) Has(txn string) bool { return e.txns[txn] != nil }

// UsedCount returns how many live transactions have used s. O(1).
func (e *Engine) UsedCount(s ServiceID) int {
	if !e.validSvc(s) {
		return 0
	}
	return e.usedN[s]
}

// Txn describes a live transaction.
func (e *Engine) Txn(txn string) (TxnInfo, bool) {
	t := e.txns[txn]
	if t == nil {
		return TxnInfo{}, false
	}
	return e.info(t), true
}

// ForEachTxn calls fn for every live transaction, in no particular order,
// until fn returns false. fn must not call the engine's event methods.
func (e *Engine) ForEachTxn(fn func(TxnInfo) bool) {
	for _, t := range e.txns {
		if !fn(e.info(t)) {
			return
		}
	}
}

// ForEachUse calls fn for every live transaction, in no particular order,
// with the version it first used each service at, until fn returns false.
// used is the engine's own: fn must neither keep nor change it, nor call
// the engine's event methods. O(live), with no allocation per transaction
// (ForEachTxn builds a TxnInfo each).
func (e *Engine) ForEachUse(fn func(txn string, used []Use) bool) {
	for id, t := range e.txns {
		if !fn(id, t.used) {
			return
		}
	}
}

// ForEachOwnedBy calls fn for every live transaction owned by owner, with
// the version it first used each service at. used is the engine's own: fn
// must neither keep nor change it, nor call the engine's event methods.
// O(live).
func (e *Engine) ForEachOwnedBy(owner Owner, fn func(txn string, used []Use)) {
	for id, t := range e.txns {
		if t.owner == owner {
			fn(id, t.used)
		}
	}
}

func (e *Engine) info(t *txn) TxnInfo {
	ti := TxnInfo{
		ID:          t.id,
		Entry:       t.entry,
		Owner:       t.owner,
		Legacy:      t.flags&txLegacy != 0,
		Implicit:    t.flags&txImplicit != 0,
		LearnedEdge: t.flags&txLearned != 0,
		Used:        slices.Clone(t.used),
		Running:     make([]SubInfo, len(t.subs)),
	}
	for i, s := range t.subs {
		ti.Running[i] = SubInfo{ID: s.id, Service: s.svc}
		for _, h := range t.hints {
			if h.sub == s.id {
				ti.Running[i].Done = append(ti.Running[i].Done, h.to)
			}
		}
	}
	if ti.Legacy {
		ti.Blocks = make([]ServiceID, 0, len(e.svcIDs))
		for i := range e.svcNames {
			if !e.svcGone[i] {
				ti.Blocks = append(ti.Blocks, ServiceID(i))
			}
		}
	} else {
		ti.Blocks = members(t.block)
	}
	return ti
}

func (t *txn) version(s ServiceID) (VersionID, bool) {
	for _, u := range t.used {
		if u.Service == s {
			return u.Version, true
		}
	}
	return 0, false
}

// SubAt returns the service sub-transaction sub of txn runs at, and the
// version txn uses there, if sub is running.
func (e *Engine) SubAt(txn string, sub SubID) (ServiceID, VersionID, bool) {
	t := e.txns[txn]
	if t == nil {
		return 0, 0, false
	}
	i := t.findSub(sub)
	if i < 0 {
		return 0, 0, false
	}
	s := t.subs[i].svc
	v, _ := t.version(s)
	return s, v, true
}

// SubCaller returns the service that called sub-transaction sub of txn (the
// one whose Return ends it), if sub runs and its Call was seen: false for a
// root, a sub not running, or one known only as a caller so far.
func (e *Engine) SubCaller(txn string, sub SubID) (ServiceID, bool) {
	t := e.txns[txn]
	if t == nil {
		return 0, false
	}
	i := t.findSub(sub)
	if i < 0 || t.subs[i].from == noService {
		return 0, false
	}
	return t.subs[i].from, true
}

// Implicit reports whether txn is live and whether it is still known only
// through calls (its Begin not seen). O(1), no allocation: the
// coordinator's sweep of such transactions asks it of each candidate.
func (e *Engine) Implicit(txn string) (implicit, live bool) {
	t := e.txns[txn]
	if t == nil {
		return false, false
	}
	return t.flags&txImplicit != 0, true
}

// OwnerOf returns the owner of a live transaction, its entry service, and
// whether it is adopted: known only through calls (its Begin not seen) or
// legacy, its owner then being the session that adopted it, not
// necessarily its root's.
func (e *Engine) OwnerOf(txn string) (owner Owner, entry ServiceID, adopted, ok bool) {
	t := e.txns[txn]
	if t == nil {
		return 0, 0, false, false
	}
	return t.owner, t.entry, t.flags&(txImplicit|txLegacy) != 0, true
}
