package graph

import (
	"errors"
	"hash/maphash"
	"math/bits"
)

// ServiceID numbers an interned service densely from 0.
type ServiceID uint32

// VersionID numbers an interned version name; 0 is the empty name ("none").
type VersionID uint32

// SubID names a sub-transaction within its transaction (the span id); never 0.
type SubID uint64

// Owner is an opaque tag of the session owning a transaction's root; 0 means
// unknown (a transaction created implicitly, before its Begin).
type Owner uint32

// noService is no service: a sub-transaction's caller not known yet, or a
// Done whose sender is trusted (Done rather than DoneBy).
const noService = ^ServiceID(0)

// Sentinel errors returned by the event methods. A failing event changes
// nothing.
var (
	ErrUnknownTxn = errors.New("graph: unknown transaction")
	ErrTxnEnded   = errors.New("graph: transaction ended")
	ErrTxnExists  = errors.New("graph: transaction exists")
	ErrUnknownSub = errors.New("graph: unknown sub-transaction")
	ErrSubExists  = errors.New("graph: sub-transaction exists")
	ErrInvalid    = errors.New("graph: invalid argument")

	// ErrSubReturned: the event is about a sub-transaction whose Return
	// was applied. It came late, from another stream (a Done sent by the
	// callee's sidecar after the caller's Return overtook it), or it is a
	// resend. It changes nothing.
	ErrSubReturned = errors.New("graph: sub-transaction returned")
	// ErrEarlyLimit: a Done about a sub-transaction (or transaction) not
	// seen yet, when maxEarly such hints wait for it already. Dropping it
	// is safe: a hint only ever makes freeness less pessimistic.
	ErrEarlyLimit = errors.New("graph: too many done hints waiting for their call")
	// ErrLegacySub: a Return about a sub-transaction of a legacy
	// transaction that this engine never saw start (it started before a
	// failover). Expected after a failover; it changes nothing: the
	// transaction blocks every service until it ends.
	ErrLegacySub = errors.New("graph: sub-transaction of a legacy transaction, started before this engine")
	// ErrNotOwner: the event names a sub-transaction that runs at another
	// service than the sender's (a CALL from a caller that is not there, a
	// DONE about another service's sub-transaction). It changes nothing.
	ErrNotOwner = errors.New("graph: the sub-transaction runs at another service")
)

// Engine holds the static graph and the live transactions. It is not safe for
// concurrent use. Its owner must call TakeDirty regularly: ended
// transactions stay queued, and are reused, only once taken.
type Engine struct {
	svcNames []string
	svcIDs   map[string]ServiceID
	words    int // uint64 words in a service bitset
	// Per-service bitsets are only as long as their highest member needs
	// (nil when empty): what a service costs does not grow with the number
	// of services, only with its own edges.
	succ     [][]uint64          // static successors of each service
	reach    [][]uint64          // services reachable by >= 1 static edge
	blockers []map[*txn]struct{} // non-legacy transactions blocking each service; nil until one does
	// blockUse[s][v] counts the members of blockers[s] that used s at
	// version v: whether a side of an update is drained (BlockersUsing,
	// AnyBlockerUsing) is read in O(1), not by a scan of every blocker,
	// which an update's progress check does under the event lock after
	// each batch. Kept by countBlockUse wherever blockers[s] or a used
	// entry changes.
	blockUse [][]verCount
	callers  []ServiceID // services with a static successor: the only ones that reach any
	usedN    []int       // live transactions with used[s] set
	svcGone  []bool      // removed; its id is in svcFree
	svcFree  []ServiceID // removed ids, reused by Service

	verNames []string
	verIDs   map[string]VersionID
	verN     []int       // first uses of live transactions at each version
	verFree  []VersionID // removed ids, reused by Version

	txns   map[string]*txn
	owned  map[Owner]int     // live transactions by owner (0 not counted)
	legacy map[*txn]struct{} // legacy transactions block every service

	// Recently ended ids by 64-bit hash (an unknown id matches one with
	// odds of about 2^-47), in two generations of at most maxTombs each.
	seed            maphash.Seed
	tombs, oldTombs map[uint64]struct{}
	maxTombs        int

	// Write-behind queue. A queued txn with txDirty set yields one record;
	// others are skipped. dirty counts those.
	queue      []*txn // in queueing order, so epochs never decrease along it
	qhead      int
	epoch      uint64 // stamped on transactions as they are queued
	dirty      int
	onDirty    func()          // called when dirty goes from 0 to 1 (WithOnDirty)
	pendingDel map[string]*txn // emitted, ended, deletion not yet taken

	spare []*txn // ended transactions nothing refers to, for reuse

	// Done hints of transactions not seen yet, by transaction id, in two
	// generations of at most maxOrphans each; a transaction takes its
	// hints when it starts.
	orphans, oldOrphans map[string][]hint
	reorder             ReorderStats

	// Scratch bitsets, words long.
	bufR, bufF, bufEx, bufSub []uint64
}

// Option configures an Engine.
type Option func(*Engine)

// WithOnDirty sets a function the engine calls, synchronously, whenever
// DirtyLen goes from 0 to 1: a write-behind that sleeps while nothing is
// dirty wakes on it. fn must not call the engine.
func WithOnDirty(fn func()) Option {
	return func(e *Engine) { e.onDirty = fn }
}

// WithTombstones sets how many recently ended transaction ids are at least
// remembered (default 65536; at most twice as many are). Events for them
// fail with ErrTxnEnded instead of recreating the transaction implicitly.
func WithTombstones(n int) Option {
	return func(e *Engine) { e.maxTombs = max(n, 0) }
}

// New returns an empty engine.
func New(opts ...Option) *Engine {
	e := &Engine{
		svcIDs:     make(map[string]ServiceID),
		verNames:   []string{""},
		verN:       []int{0},
		verIDs:     map[string]VersionID{"": 0},
		txns:       make(map[string]*txn),
		owned:      make(map[Owner]int),
		legacy:     make(map[*txn]struct{}),
		seed:       maphash.MakeSeed(),
		tombs:      make(map[uint64]struct{}),
		oldTombs:   make(map[uint64]struct{}),
		pendingDel: make(map[string]*txn),
		orphans:    make(map[string][]hint),
		oldOrphans: make(map[string][]hint),
		maxTombs:   1 << 16,
	}
	for _, o := range opts {
		o(e)
	}
	return e
}

// Service interns a service name, creating the service if it is new.
func (e *Engine) Service(name string) ServiceID {
	if id, ok := e.svcIDs[name]; ok {
		return id
	}
	if n := len(e.svcFree); n > 0 {
		// A removed id: its edges, reach, blockers and users are empty
		// (RemoveServices).
		id := e.svcFree[n-1]
		e.svcFree = e.svcFree[:n-1]
		e.svcNames[id], e.svcGone[id] = name, false
		e.svcIDs[name] = id
		return id
	}
	id := ServiceID(len(e.svcNames))
	e.svcNames = append(e.svcNames, name)
	e.svcIDs[name] = id
	if len(e.svcNames) > e.words*64 {
		// Only the scratch bitsets span every service; they grow by
		// doubling, so interning n services costs O(n) in all.
		e.words = max(2*e.words, 1)
		e.bufR = make([]uint64, e.words)
		e.bufF = make([]uint64, e.words)
		e.bufEx = make([]uint64, e.words)
		e.bufSub = make([]uint64, e.words)
	}
	e.succ = append(e.succ, nil)
	e.reach = append(e.reach, nil)
	e.blockers = append(e.blockers, nil)
	e.blockUse = append(e.blockUse, nil)
	e.usedN = append(e.usedN, 0)
	e.svcGone = append(e.svcGone, false)
	return id
}

// LookupService returns the id of an interned service.
func (e *Engine) LookupService(name string) (ServiceID, bool) {
	id, ok := e.svcIDs[name]
	return id, ok
}

// ServiceName returns the name of a service, "" if the id is unknown.
func (e *Engine) ServiceName(id ServiceID) string {
	if !e.validSvc(id) {
		return ""
	}
	return e.svcNames[id]
}

// NumServices returns how many services are interned (and not removed);
// their ids are below ServiceIDBound().
func (e *Engine) NumServices() int { return len(e.svcIDs) }

// Version interns a version name; "" is 0.
func (e *Engine) Version(name string) VersionID {
	if v, ok := e.verIDs[name]; ok {
		return v
	}
	if n := len(e.verFree); n > 0 {
		v := e.verFree[n-1]
		e.verFree = e.verFree[:n-1]
		e.verNames[v] = name
		e.verIDs[name] = v
		return v
	}
	v := VersionID(len(e.verNames))
	e.verNames = append(e.verNames, name)
	e.verN = append(e.verN, 0)
	e.verIDs[name] = v
	return v
}

// LookupVersion returns the id of an interned version.
func (e *Engine) LookupVersion(name string) (VersionID, bool) {
	v, ok := e.verIDs[name]
	return v, ok
}

// VersionName returns the name of a version, "" if the id is unknown.
func (e *Engine) VersionName(v VersionID) string {
	if !e.validVer(v) {
		return ""
	}
	return e.verNames[v]
}

// AddEdge declares the static edge from→to. It returns true if the edge is
// new, false if it exists or a service is unknown. A new edge recomputes the
// block set of every live transaction: O(live).
func (e *Engine) AddEdge(from, to ServiceID) bool {
	if !e.validSvc(from) || !e.validSvc(to) || has(e.succ[from], to) {
		return false
	}
	if len(e.succ[from]) == 0 {
		e.callers = append(e.callers, from)
	}
	e.succ[from] = set(e.succ[from], to)
	// Whoever reaches from (or is from) now reaches to and all to reaches.
	for _, s := range e.callers {
		if r := e.reach[s]; s == from || has(r, from) {
			e.reach[s] = orGrow(set(r, to), e.reach[to])
		}
	}
	for _, t := range e.txns {
		e.update(t)
	}
	return true
}

// HasEdge reports whether the static edge from→to is declared or learned.
func (e *Engine) HasEdge(from, to ServiceID) bool {
	return e.validSvc(from) && e.validSvc(to) && has(e.succ[from], to)
}

// Successors returns the static successors of s in increasing id order.
func (e *Engine) Successors(s ServiceID) []ServiceID {
	if !e.validSvc(s) {
		return nil
	}
	return members(e.succ[s])
}

func (e *Engine) validSvc(s ServiceID) bool { return int(s) < len(e.svcNames) && !e.svcGone[s] }

// validVer: a removed version's name is "", which only version 0 has.
func (e *Engine) validVer(v VersionID) bool {
	return int(v) < len(e.verNames) && (v == 0 || e.verNames[v] != "")
}

func has(b []uint64, s ServiceID) bool {
	i := int(s >> 6)
	return i < len(b) && b[i]&(1<<(s&63)) != 0
}

// set returns b with s added, grown if s is past its end.
func set(b []uint64, s ServiceID) []uint64 {
	i := int(s >> 6)
	if i >= len(b) {
		b = append(b, make([]uint64, i+1-len(b))...)
	}
	b[i] |= 1 << (s & 63)
	return b
}

// orGrow returns dst | src, dst grown to src's length if shorter.
func orGrow(dst, src []uint64) []uint64 {
	if len(src) > len(dst) {
		dst = append(dst, make([]uint64, len(src)-len(dst))...)
	}
	or(dst, src)
	return dst
}

// trim returns b without its trailing zero words.
func trim(b []uint64) []uint64 {
	n := len(b)
	for n > 0 && b[n-1] == 0 {
		n--
	}
	return b[:n]
}

// or ORs src into dst, which is at least as long.
func or(dst, src []uint64) {
	for i, w := range src {
		dst[i] |= w
	}
}

func members(b []uint64) []ServiceID {
	var out []ServiceID
	for i, w := range b {
		for ; w != 0; w &= w - 1 {
			out = append(out, ServiceID(i*64+bits.TrailingZeros64(w)))
		}
	}
	return out
}
