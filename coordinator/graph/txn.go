package graph

import (
	"hash/maphash"
	"math/bits"
	"slices"
)

// txn is a live distributed transaction (or, once ended, a queued deletion).
type txn struct {
	id    string
	subs  []subtx // running sub-transactions
	hints []hint  // done hints of running subs, no duplicates
	// Ids of returned subs, oldest first, at most maxReturned: a late event
	// about one (from another stream) must not start it again.
	returned []SubID
	early    []hint   // done hints of subs not seen yet, at most maxEarly
	used     []Use    // first-use version per service, in order; has every running service
	block    []uint64 // block(T) as of T's last event; unused if legacy
	entry    ServiceID
	owner    Owner
	flags    uint8
	epoch    uint64 // the engine's epoch when t was last queued
}

const (
	txLegacy   uint8 = 1 << iota
	txImplicit       // created by a Call, its Begin not seen yet
	txLearned        // used an edge that was not declared
	txDirty          // queued, and TakeDirty will emit a record for it
	txEmitted        // a record for it may exist in storage
	txEnded
)

// maxSpare bounds how many ended transactions are kept for reuse.
const maxSpare = 256

type subtx struct {
	id    SubID
	svc   ServiceID
	from  ServiceID // the caller's service (noService: a root, or not known yet)
	flags uint8
}

const (
	subRoot     uint8 = 1 << iota
	subImplicit       // started by a Call naming it as caller; its own Call not seen yet
)

// hint says running sub will not call service to again. by is the
// service that said so while the hint waits for sub to start (noService
// when the sender is trusted): it applies only if sub runs there. Applied
// hints have by 0.
type hint struct {
	sub SubID
	to  ServiceID
	by  ServiceID
}

// CallInfo reports what a Call did besides starting the sub-transaction.
type CallInfo struct {
	LearnedEdge bool // from→to was not declared; it is now
	Implicit    bool // this Call created the transaction (its Begin is not seen yet)
}

// Use is the version a transaction first used a service at.
type Use struct {
	Service ServiceID
	Version VersionID
}

// Begin starts txn with its root sub-transaction sub at entry, which used
// version ver. Begin of a transaction that only exists implicitly completes
// it; Begin of a recently ended id starts it afresh.
func (e *Engine) Begin(txn string, entry ServiceID, ver VersionID, sub SubID, owner Owner) error {
	if txn == "" || sub == 0 || !e.validSvc(entry) || !e.validVer(ver) {
		return ErrInvalid
	}
	t := e.txns[txn]
	if t == nil {
		t = e.newTxn(txn, entry, owner)
		t.subs = append(t.subs, subtx{id: sub, svc: entry, from: noService, flags: subRoot})
		e.applyEarly(t, sub)
	} else {
		if t.flags&txImplicit == 0 {
			return ErrTxnExists
		}
		i := t.findSub(sub)
		if i >= 0 && t.subs[i].svc != entry {
			return ErrSubExists
		}
		t.flags &^= txImplicit
		t.entry = entry
		e.setOwner(t, owner)
		if i >= 0 {
			t.subs[i].flags = subRoot
		} else {
			t.subs = append(t.subs, subtx{id: sub, svc: entry, from: noService, flags: subRoot})
			e.applyEarly(t, sub)
		}
	}
	e.use(t, entry, ver)
	e.markDirty(t)
	e.update(t)
	return nil
}

// Adopt gives a transaction that has no owner yet (created implicitly by a
// Call before its Begin arrived) a provisional owner, so that it ends when
// that owner's session does if its Begin never comes. Begin replaces it with
// the entry's session. It reports whether the owner was set.
func (e *Engine) Adopt(txn string, owner Owner) bool {
	t := e.txns[txn]
	if t == nil || t.owner != 0 || owner == 0 {
		return false
	}
	e.setOwner(t, owner)
	return true
}

// Call starts sub-transaction sub of txn at service to (version toVer),
// called by the running sub-transaction callerSub at from (version fromVer).
// An undeclared edge from→to is learned. Events of one transaction come
// from several streams, so Call tolerates disorder: an unknown txn is created
// implicitly, an unknown callerSub is started implicitly at from, and the
// Call of a sub so started confirms it. A callerSub that has returned is not
// started again: this Call came late, after the caller's own Return (sent by
// another stream), and only starts sub. A sub that has returned is not
// started again either (ErrSubReturned). Done hints that came before the Call
// of the sub they are about apply as it starts.
func (e *Engine) Call(txn string, from ServiceID, fromVer VersionID, callerSub SubID, to ServiceID, sub SubID, toVer VersionID) (CallInfo, error) {
	var info CallInfo
	if txn == "" || sub == 0 || callerSub == 0 || sub == callerSub ||
		!e.validSvc(from) || !e.validSvc(to) || !e.validVer(fromVer) || !e.validVer(toVer) {
		return info, ErrInvalid
	}
	t := e.txns[txn]
	if t == nil {
		if e.ended(txn) {
			return info, ErrTxnEnded
		}
		t = e.newTxn(txn, from, 0)
		t.flags |= txImplicit
		t.subs = append(t.subs, subtx{id: callerSub, svc: from, from: noService, flags: subImplicit}, subtx{id: sub, svc: to, from: from})
		e.applyEarly(t, callerSub)
		e.applyEarly(t, sub)
		info.Implicit = true
	} else {
		ci, si := t.findSub(callerSub), t.findSub(sub)
		if ci >= 0 && t.subs[ci].svc != from {
			return info, ErrNotOwner // the caller runs at another service
		}
		if si >= 0 && (t.subs[si].flags&subImplicit == 0 || t.subs[si].svc != to) {
			return info, ErrSubExists
		}
		if si < 0 && t.wasReturned(sub) {
			return info, ErrSubReturned
		}
		if si >= 0 {
			t.subs[si].flags &^= subImplicit
			t.subs[si].from = from
		} else {
			t.subs = append(t.subs, subtx{id: sub, svc: to, from: from})
			e.applyEarly(t, sub)
		}
		if ci < 0 && !t.wasReturned(callerSub) {
			t.subs = append(t.subs, subtx{id: callerSub, svc: from, from: noService, flags: subImplicit})
			e.applyEarly(t, callerSub)
		}
	}
	if i := slices.Index(t.hints, hint{sub: callerSub, to: to}); i >= 0 {
		t.hints = slices.Delete(t.hints, i, i+1) // a broken hint no longer holds
	}
	if u1, u2 := e.use(t, from, fromVer), e.use(t, to, toVer); u1 || u2 {
		e.markDirty(t)
	}
	if !has(e.succ[from], to) {
		info.LearnedEdge = true
		t.flags |= txLearned
		e.AddEdge(from, to) // updates t too
	} else {
		e.update(t)
	}
	return info, nil
}

// Return ends the running sub-transaction sub of txn (its past edge stays
// through used). The root sub-transaction runs until End. A Return of a sub
// that has returned already fails with ErrSubReturned.
func (e *Engine) Return(txn string, sub SubID) error {
	if sub == 0 {
		return ErrInvalid
	}
	t, err := e.live(txn)
	if err != nil {
		return err
	}
	i := t.findSub(sub)
	if i < 0 {
		if t.wasReturned(sub) {
			return ErrSubReturned
		}
		if t.flags&txLegacy != 0 {
			return ErrLegacySub
		}
		return ErrUnknownSub
	}
	if t.subs[i].flags&subRoot != 0 {
		return ErrInvalid
	}
	t.subs = slices.Delete(t.subs, i, i+1)
	t.hints = slices.DeleteFunc(t.hints, func(h hint) bool { return h.sub == sub })
	t.remember(sub)
	e.update(t)
	return nil
}

// Done records that the running sub-transaction sub of txn will not call
// service to again. The service of sub sends it, on another stream than the
// caller's Call that starts sub and its Return. A Done that comes before
// that Call (or before anything of txn) is kept, at most maxEarly per
// transaction, and applies when sub starts; it goes with its transaction. A
// Done that comes after the Return fails with ErrSubReturned. Done trusts
// its caller to be sub's service; DoneBy checks it.
func (e *Engine) Done(txn string, sub SubID, to ServiceID) error {
	return e.DoneBy(txn, sub, to, noService)
}

// DoneBy is Done sent by service by: a sub-transaction running at another
// service fails with ErrNotOwner, and a hint kept for a sub not started
// yet is dropped when it starts elsewhere (a hint makes freeness less
// pessimistic, so only the sub's own service may give it).
func (e *Engine) DoneBy(txn string, sub SubID, to, by ServiceID) error {
	if txn == "" || sub == 0 || !e.validSvc(to) || (by != noService && !e.validSvc(by)) {
		return ErrInvalid
	}
	t := e.txns[txn]
	if t == nil {
		if e.ended(txn) {
			return ErrTxnEnded
		}
		return e.deferOrphan(txn, hint{sub, to, by})
	}
	i := t.findSub(sub)
	if i < 0 {
		if t.wasReturned(sub) {
			return ErrSubReturned
		}
		return e.deferEarly(t, hint{sub, to, by})
	}
	if by != noService && t.subs[i].svc != by {
		return ErrNotOwner
	}
	h := hint{sub: sub, to: to}
	if slices.Contains(t.hints, h) {
		return nil
	}
	t.hints = append(t.hints, h)
	e.update(t)
	return nil
}

// End ends txn: all its state goes and its id is remembered as a tombstone.
func (e *Engine) End(txn string) error {
	t, err := e.live(txn)
	if err != nil {
		return err
	}
	e.end(t)
	return nil
}

// AddLegacy adds a transaction restored from storage, which this engine did
// not see start: until it ends it has a past and a future at every service,
// including services interned later. Its entry is taken to be the service of
// its first use.
func (e *Engine) AddLegacy(txn string, owner Owner, used []Use) error {
	if txn == "" {
		return ErrInvalid
	}
	for _, u := range used {
		if !e.validSvc(u.Service) || !e.validVer(u.Version) {
			return ErrInvalid
		}
	}
	if e.txns[txn] != nil {
		return ErrTxnExists
	}
	var entry ServiceID
	if len(used) > 0 {
		entry = used[0].Service
	}
	t := e.newTxn(txn, entry, owner)
	t.flags |= txLegacy | txEmitted
	for _, u := range used {
		e.use(t, u.Service, u.Version)
	}
	e.legacy[t] = struct{}{}
	e.markDirty(t)
	return nil
}

// MakeLegacy makes a live transaction legacy: from now on it blocks every
// service, as one a replica did not see start must (a failover leader that
// learns of it from its entry's resync). uses are added where txn has not
// used the service yet; owner, when not 0, becomes its owner. It reports
// whether txn was live.
func (e *Engine) MakeLegacy(txn string, owner Owner, uses []Use) bool {
	t := e.txns[txn]
	if t == nil {
		return false
	}
	for _, u := range uses {
		if e.validSvc(u.Service) && e.validVer(u.Version) {
			e.use(t, u.Service, u.Version)
		}
	}
	if owner != 0 {
		e.setOwner(t, owner)
		t.flags &^= txImplicit
	}
	e.toLegacy(t)
	e.markDirty(t)
	return true
}

// EndOwnedBy ends every live transaction owned by owner and returns their
// ids, in no particular order. O(live). Owner 0 is that of the transactions
// whose Begin is not seen yet.
func (e *Engine) EndOwnedBy(owner Owner) []string {
	var ids []string
	for id, t := range e.txns {
		if t.owner == owner {
			e.end(t)
			ids = append(ids, id)
		}
	}
	return ids
}

func (e *Engine) live(id string) (*txn, error) {
	if id == "" {
		return nil, ErrInvalid
	}
	if t := e.txns[id]; t != nil {
		return t, nil
	}
	if e.ended(id) {
		return nil, ErrTxnEnded
	}
	return nil, ErrUnknownTxn
}

func (e *Engine) newTxn(id string, entry ServiceID, owner Owner) *txn {
	var t *txn
	if n := len(e.spare); n > 0 {
		t = e.spare[n-1]
		e.spare = e.spare[:n-1]
	} else {
		t = new(txn)
	}
	t.id, t.entry, t.owner = id, entry, 0
	e.setOwner(t, owner)
	if len(e.orphans)+len(e.oldOrphans) > 0 {
		e.takeOrphans(t)
	}
	if old := e.pendingDel[id]; old != nil {
		// The put of the new incarnation supersedes the pending deletion.
		delete(e.pendingDel, id)
		old.flags &^= txDirty | txEmitted
		e.dirty--
		t.flags |= txEmitted
	}
	e.txns[id] = t
	return t
}

func (e *Engine) end(t *txn) {
	id := t.id
	delete(e.txns, id)
	owner := t.owner
	e.setOwner(t, 0) // uncounted; the owner stays on t for its record
	t.owner = owner
	if t.flags&txLegacy != 0 {
		delete(e.legacy, t)
	}
	for i, w := range t.block {
		for ; w != 0; w &= w - 1 {
			s := ServiceID(i*64 + bits.TrailingZeros64(w))
			delete(e.blockers[s], t)
			e.countBlockUse(t, s, -1)
		}
	}
	for _, u := range t.used {
		e.usedN[u.Service]--
		e.verN[u.Version]--
	}
	e.reorder.EarlyDoneDropped += uint64(len(t.early))
	t.early = t.early[:0]
	// A live transaction is dirty or emitted, so t is or now gets queued;
	// TakeDirty recycles it.
	if t.flags&txEmitted != 0 {
		e.markDirty(t)
		e.pendingDel[id] = t
	} else {
		t.flags &^= txDirty // begun and ended within one window: never written
		e.dirty--
	}
	t.flags |= txEnded
	if e.maxTombs == 0 {
		return
	}
	if len(e.tombs) == e.maxTombs {
		clear(e.oldTombs) // forget the older generation
		e.tombs, e.oldTombs = e.oldTombs, e.tombs
	}
	e.tombs[maphash.String(e.seed, id)] = struct{}{}
}

// setOwner makes owner own t, keeping the per-owner counts.
func (e *Engine) setOwner(t *txn, owner Owner) {
	if t.owner == owner {
		return
	}
	if t.owner != 0 {
		if n := e.owned[t.owner] - 1; n > 0 {
			e.owned[t.owner] = n
		} else {
			delete(e.owned, t.owner)
		}
	}
	t.owner = owner
	if owner != 0 {
		e.owned[owner]++
	}
}

// ended reports whether id is a tombstone.
func (e *Engine) ended(id string) bool {
	h := maphash.String(e.seed, id)
	_, ok := e.tombs[h]
	_, old := e.oldTombs[h]
	return ok || old
}

// use sets used[s] = v unless set; it reports whether it set it.
func (e *Engine) use(t *txn, s ServiceID, v VersionID) bool {
	for _, u := range t.used {
		if u.Service == s {
			return false
		}
	}
	t.used = append(t.used, Use{s, v})
	e.usedN[s]++
	e.verN[v]++
	if t.flags&txLegacy == 0 && has(t.block, s) {
		e.countBlockUse(t, s, 1) // it blocks s already: now as a user of v
	}
	return true
}

// countBlockUse adds d to blockUse[s] at the version t used s at, if it
// used s; t joins (d = 1) or leaves (-1) blockers[s], or, a member,
// records its use of s (1).
func (e *Engine) countBlockUse(t *txn, s ServiceID, d int) {
	v, ok := t.version(s)
	if !ok {
		return
	}
	cs := e.blockUse[s]
	for i := range cs {
		if cs[i].v == v {
			if cs[i].n += int32(d); cs[i].n == 0 {
				cs[i] = cs[len(cs)-1]
				e.blockUse[s] = cs[:len(cs)-1]
			}
			return
		}
	}
	e.blockUse[s] = append(cs, verCount{v, int32(d)})
}

// verCount is a count at a version: a service's blockers have used it at
// a few versions at most, so a short slice beats a map.
type verCount struct {
	v VersionID
	n int32
}

// blockersAt is blockUse[s][v].
func (e *Engine) blockersAt(s ServiceID, v VersionID) int {
	for _, c := range e.blockUse[s] {
		if c.v == v {
			return int(c.n)
		}
	}
	return 0
}

func (e *Engine) markDirty(t *txn) {
	if t.flags&txDirty == 0 { // then t is not queued
		e.queue = append(e.queue, t)
		t.flags |= txDirty
		t.epoch = e.epoch
		e.dirty++
		if e.dirty == 1 && e.onDirty != nil {
			e.onDirty()
		}
	}
}

// recycle keeps t, ended and no longer referred to, for reuse by newTxn.
func (e *Engine) recycle(t *txn) {
	if len(e.spare) < maxSpare {
		*t = txn{subs: t.subs[:0], hints: t.hints[:0], used: t.used[:0], block: t.block[:0],
			returned: t.returned[:0], early: t.early[:0]}
		e.spare = append(e.spare, t)
	}
}

// update recomputes block(T) and applies the difference to the blocker index.
func (e *Engine) update(t *txn) {
	if t.flags&txLegacy != 0 {
		return
	}
	nb := e.block(t)
	old := t.block
	for i, w := range nb {
		var o uint64
		if i < len(old) {
			o = old[i]
		}
		for a := w &^ o; a != 0; a &= a - 1 {
			s := ServiceID(i*64 + bits.TrailingZeros64(a))
			if e.blockers[s] == nil {
				e.blockers[s] = make(map[*txn]struct{})
			}
			e.blockers[s][t] = struct{}{}
			e.countBlockUse(t, s, 1)
		}
		for r := o &^ w; r != 0; r &= r - 1 {
			s := ServiceID(i*64 + bits.TrailingZeros64(r))
			delete(e.blockers[s], t)
			e.countBlockUse(t, s, -1)
		}
	}
	t.block = append(old[:0], trim(nb)...) // as long as its members need
}

// block computes block(T) = R ∪ (F ∩ U) into e.bufR and returns it.
func (e *Engine) block(t *txn) []uint64 {
	r, f := e.running(t), e.bufF
	clear(f)
	e.future(t, r, f)
	for _, u := range t.used {
		if has(f, u.Service) {
			r[u.Service>>6] |= 1 << (u.Service & 63)
		}
	}
	return r
}

// running computes R(T) into e.bufR and returns it.
func (e *Engine) running(t *txn) []uint64 {
	r := e.bufR
	clear(r)
	for _, s := range t.subs {
		r[s.svc>>6] |= 1 << (s.svc & 63)
	}
	return r
}

// future ORs F(T) into f, given r = R(T).
func (e *Engine) future(t *txn, r, f []uint64) {
	for i, w := range r {
		for ; w != 0; w &= w - 1 {
			e.futureOf(t, ServiceID(i*64+bits.TrailingZeros64(w)), f)
		}
	}
}

// futureOf ORs into f what T may still reach from its running service x:
// every successor y of x that not every running sub at x said Done(y) to,
// and all that y reaches.
func (e *Engine) futureOf(t *txn, x ServiceID, f []uint64) {
	if len(t.hints) == 0 {
		or(f, e.reach[x])
		return
	}
	ex := e.bufEx // successors every sub at x is done with
	clear(ex)
	copy(ex, e.succ[x])
	for _, s := range t.subs {
		if s.svc != x {
			continue
		}
		h := e.bufSub
		clear(h)
		for _, d := range t.hints {
			if d.sub == s.id {
				h[d.to>>6] |= 1 << (d.to & 63)
			}
		}
		for i := range ex {
			ex[i] &= h[i]
		}
	}
	for i, w := range e.succ[x] {
		for w &^= ex[i]; w != 0; w &= w - 1 {
			y := i*64 + bits.TrailingZeros64(w)
			f[i] |= 1 << (y & 63)
			or(f, e.reach[y])
		}
	}
}

func (t *txn) findSub(id SubID) int {
	for i, s := range t.subs {
		if s.id == id {
			return i
		}
	}
	return -1
}

func (t *txn) runsAt(s ServiceID) bool {
	for _, sb := range t.subs {
		if sb.svc == s {
			return true
		}
	}
	return false
}
