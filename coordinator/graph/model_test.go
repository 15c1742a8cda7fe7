package graph

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

var modelSeed = flag.Uint64("model.seed", 0, "run only this seed of TestModel")

// model keeps the protocol's dynamic edges one by one (DESIGN.md §2 rules 1
// to 5), with no cleverness: it is the oracle the engine is checked against.
type model struct {
	n    int
	succ [][]bool
	txns map[string]*mtxn
}

type mtxn struct {
	subs   map[SubID]*msub
	future map[[2]ServiceID]bool // non-self-pair future edges
	past   map[[2]ServiceID]bool
	used   map[ServiceID]VersionID
	root   SubID
}

type msub struct {
	from, svc ServiceID
	done      map[ServiceID]bool
}

func (m *model) reachable(from ServiceID) []bool {
	seen := make([]bool, m.n)
	seen[from] = true
	stack := []ServiceID{from}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for y := range m.n {
			if m.succ[x][y] && !seen[y] {
				seen[y] = true
				stack = append(stack, ServiceID(y))
			}
		}
	}
	return seen
}

func (m *model) begin(id string, entry ServiceID, ver VersionID, root SubID) {
	t := &mtxn{
		subs:   map[SubID]*msub{root: {from: entry, svc: entry, done: map[ServiceID]bool{}}},
		future: map[[2]ServiceID]bool{},
		past:   map[[2]ServiceID]bool{},
		used:   map[ServiceID]VersionID{entry: ver},
		root:   root,
	}
	// Rule 3: future edges exist before the first sub-transaction.
	for x, ok := range m.reachable(entry) {
		for y := range m.n {
			if ok && m.succ[x][y] {
				t.future[[2]ServiceID{ServiceID(x), ServiceID(y)}] = true
			}
		}
	}
	m.txns[id] = t
}

func (t *mtxn) call(from ServiceID, to ServiceID, sub SubID, ver VersionID) {
	t.subs[sub] = &msub{from: from, svc: to, done: map[ServiceID]bool{}}
	if _, ok := t.used[to]; !ok {
		t.used[to] = ver
	}
}

func (t *mtxn) ret(sub SubID) {
	s := t.subs[sub]
	t.past[[2]ServiceID{s.from, s.svc}] = true // rule 4
	delete(t.subs, sub)
}

// settle removes future edges by rule 3 until nothing changes. Within a pass
// an edge may be kept for an edge into its source that the pass removes;
// the next pass removes it.
func (t *mtxn) settle() {
	for changed := true; changed; {
		changed = false
		into := map[ServiceID]bool{}
		for e := range t.future {
			into[e[1]] = true
		}
		for e := range t.future {
			x, y := e[0], e[1]
			removable := !into[x]
			for _, s := range t.subs {
				if s.svc == x && !s.done[y] {
					removable = false
				}
			}
			if removable {
				delete(t.future, e)
				changed = true
			}
		}
	}
}

func (t *mtxn) runsAt(s ServiceID) bool {
	for _, sb := range t.subs {
		if sb.svc == s {
			return true
		}
	}
	return false
}

// edges returns, per service S, whether a future edge and a past edge of T
// point at S, counting the self pairs of running subs (rule 1).
func (t *mtxn) edges(n int) (future, past []bool) {
	future, past = make([]bool, n), make([]bool, n)
	for e := range t.future {
		future[e[1]] = true
	}
	for e := range t.past {
		past[e[1]] = true
	}
	for _, s := range t.subs {
		future[s.svc], past[s.svc] = true, true
	}
	return future, past
}

// futureReaches reports whether a path of future edges leads from x to s.
func (t *mtxn) futureReaches(x, s ServiceID) bool {
	next := map[ServiceID][]ServiceID{}
	for e := range t.future {
		next[e[0]] = append(next[e[0]], e[1])
	}
	seen := map[ServiceID]bool{}
	for stack := next[x]; len(stack) > 0; {
		y := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if !seen[y] {
			seen[y] = true
			stack = append(stack, next[y]...)
		}
	}
	return seen[s]
}

// TestModel checks the engine against the model on random static graphs and
// random event sequences. Acyclic graphs: hasFuture, hasPast, free and
// blockers equal. Cyclic graphs: the engine's future is within the model's,
// hasPast equal, and the engine is sound: whenever T calls S, hasFuture(T,S)
// held at every earlier moment of T. It also checks the write-behind records
// against a fake store.
func TestModel(t *testing.T) {
	seeds := uint64(2000)
	if testing.Short() {
		seeds = 200
	}
	if *modelSeed != 0 {
		runModel(t, *modelSeed)
		return
	}
	for seed := uint64(1); seed <= seeds; seed++ {
		runModel(t, seed)
	}
}

func runModel(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	runModelWith(t, rng, fmt.Sprintf("seed %d (rerun with -model.seed=%d)", seed, seed), 120, nil, false)
}

// picker is where runModelWith takes its choices from: a seeded PRNG
// (TestModel), or the bytes of a fuzz input (FuzzEngineModel).
type picker interface {
	IntN(n int) int
	Float64() float64
}

// runModelWith runs up to steps random steps (fewer if more returns false)
// on the engine and the model, checking them after each. With hostile set,
// some steps are events the engine must reject (ErrInvalid, ErrTxnExists,
// ErrSubExists, ErrUnknownSub, ErrUnknownTxn, ErrTxnEnded) without any
// change: the model, which does not apply them, must still agree.
func runModelWith(t *testing.T, rng picker, label string, steps int, more func() bool, hostile bool) {
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s: %s", label, fmt.Sprintf(format, args...))
	}
	n := 2 + rng.IntN(9)
	if rng.IntN(10) == 0 {
		n = 60 + rng.IntN(12) // more than one bitset word
	}
	cyclic := rng.IntN(2) == 1
	p := 0.15 + 0.3*rng.Float64()
	if n > 20 {
		p = 3 / float64(n)
	}
	m := &model{n: n, succ: make([][]bool, n), txns: map[string]*mtxn{}}
	e := New()
	for i := range n {
		e.Service(fmt.Sprint("s", i))
		m.succ[i] = make([]bool, n)
	}
	for x := range n {
		for y := range n {
			if (cyclic || x < y) && rng.Float64() < p {
				m.succ[x][y] = true
				e.AddEdge(ServiceID(x), ServiceID(y))
			}
		}
	}
	vers := []VersionID{e.Version("v1"), e.Version("v2")}

	never := map[string][]bool{} // never[T][S]: engine hasFuture(T,S) was false once
	store := map[string]Record{}
	take := func(limit int) {
		seen := map[string]bool{}
		got := e.TakeDirty(limit, func(r Record) {
			if seen[r.Txn] {
				fail("TakeDirty emitted %s twice in one call", r.Txn)
			}
			seen[r.Txn] = true
			if r.Deleted {
				if _, ok := store[r.Txn]; !ok {
					fail("deletion of %s, which was never written", r.Txn)
				}
				delete(store, r.Txn)
				return
			}
			r.Used = slices.Clone(r.Used)
			store[r.Txn] = r
		})
		if got > limit || got != len(seen) {
			fail("TakeDirty(%d) = %d, emitted %d", limit, got, len(seen))
		}
	}

	check := func() {
		t.Helper()
		if e.Live() != len(m.txns) {
			fail("Live() = %d, model %d", e.Live(), len(m.txns))
		}
		blockers := make([]map[string]bool, n) // per S, by the model
		for s := range blockers {
			blockers[s] = map[string]bool{}
		}
		for id, mt := range m.txns {
			info, ok := e.Txn(id)
			if !ok {
				fail("Txn(%s) missing", id)
			}
			var running []SubID
			for _, r := range info.Running {
				running = append(running, r.ID)
			}
			slices.Sort(running)
			if want := slices.Sorted(func(yield func(SubID) bool) {
				for id := range mt.subs {
					if !yield(id) {
						return
					}
				}
			}); !slices.Equal(running, want) {
				fail("%s running %v, model %v", id, running, want)
			}
			future, past := mt.edges(n)
			for s := range n {
				sid := ServiceID(s)
				ef, mf := e.HasFuture(id, sid), future[s]
				ep, mp := e.HasPast(id, sid), past[s]
				if ef != mf && (!cyclic || ef) {
					fail("hasFuture(%s,s%d) = %v, model %v", id, s, ef, mf)
				}
				if ep != mp {
					fail("hasPast(%s,s%d) = %v, model %v", id, s, ep, mp)
				}
				if !ef {
					never[id][s] = true
				}
				if ev, eok := e.Used(id, sid); eok != (mt.used[sid] != 0) || ev != mt.used[sid] {
					fail("Used(%s,s%d) = %d,%v, model %d", id, s, ev, eok, mt.used[sid])
				}
				if mf && mp {
					blockers[s][id] = true
				}
				if slices.Contains(info.Blocks, sid) != (ef && ep) {
					fail("%s Blocks %v, s%d: future %v past %v", id, info.Blocks, s, ef, ep)
				}
			}
		}
		for s := range n {
			sid := ServiceID(s)
			bs := e.Blockers(sid, 1<<20)
			if e.BlockerCount(sid) != len(bs) || e.Free(sid) != (len(bs) == 0) {
				fail("s%d: BlockerCount %d, Free %v, %d blockers", s, e.BlockerCount(sid), e.Free(sid), len(bs))
			}
			if len(bs) > 1 && len(e.Blockers(sid, len(bs)-1)) != len(bs)-1 {
				fail("s%d: Blockers limit not respected", s)
			}
			got := map[string]bool{}
			for _, b := range bs {
				got[b.Txn] = true
				mt := m.txns[b.Txn]
				if mt == nil || !blockers[s][b.Txn] {
					fail("s%d blocked by %s, model blockers %v", s, b.Txn, blockers[s])
				}
				if !e.HasFuture(b.Txn, sid) || !e.HasPast(b.Txn, sid) {
					fail("s%d blocked by %s, which has no future or no past there", s, b.Txn)
				}
				if b.Legacy || b.Running != mt.runsAt(sid) || b.PastVersion != mt.used[sid] || !b.FutureViaOK {
					fail("s%d blocker %+v, model running %v used %d", s, b, mt.runsAt(sid), mt.used[sid])
				}
				via := b.FutureVia
				if !mt.runsAt(via) || (via == sid) != b.Running || via != sid && !mt.futureReaches(via, sid) {
					fail("s%d blocker %+v: FutureVia is not a running service reaching s%d by future edges", s, b, s)
				}
			}
			if !cyclic && len(got) != len(blockers[s]) {
				fail("s%d blockers %v, model %v", s, got, blockers[s])
			}
			users := 0
			for _, mt := range m.txns {
				if mt.used[sid] != 0 {
					users++
				}
			}
			if e.UsedCount(sid) != users {
				fail("UsedCount(s%d) = %d, model %d", s, e.UsedCount(sid), users)
			}
			for _, v := range vers {
				want := 0
				for _, b := range bs {
					if b.PastVersion == v {
						want++
					}
				}
				if got, scan := e.BlockersUsing(sid, v), e.blockersUsingScan(sid, v); got != scan || got != want ||
					e.AnyBlockerUsing(sid, v) != (got > 0) {
					fail("s%d at v%d: BlockersUsing %d (any %v), by a scan %d, blockers that used it there %d",
						s, v, got, e.AnyBlockerUsing(sid, v), scan, want)
				}
			}
		}
		checkSets(e, m, n, cyclic, fail)
	}

	// forget asks the engine to remove s. It must do so exactly when no
	// live transaction has used s, and none may still call it unless s
	// leads nowhere else (a sink, or only to itself): then removing it
	// changes nobody's future but for s. On a cyclic graph the engine's
	// future is within the model's, so it may remove s where the model
	// keeps a future edge into it that nothing can reach. A removed s is
	// interned again at once under a new name, gets its id back and only
	// outgoing edges: what no live transaction can reach.
	forgotten := 0
	forget := func(s ServiceID) {
		t.Helper()
		sink := true
		for y := range n {
			if m.succ[s][y] && ServiceID(y) != s {
				sink = false
			}
		}
		removable := true
		for _, mt := range m.txns {
			for e := range mt.future {
				if e[1] == s && !sink {
					removable = false
				}
			}
			if mt.used[s] != 0 || mt.runsAt(s) {
				removable = false
			}
		}
		name := e.ServiceName(s)
		got := e.RemoveServices([]ServiceID{s})
		switch {
		case len(got) > 1 || len(got) == 1 && got[0] != s:
			fail("RemoveServices(s%d) = %v", s, got)
		case removable && len(got) == 0:
			fail("RemoveServices(s%d) kept it; no live transaction used or may call it", s)
		case len(got) == 0:
			return
		case !cyclic && !removable:
			fail("RemoveServices(s%d) removed it while a live transaction may call it", s)
		}
		for _, mt := range m.txns {
			if mt.used[s] != 0 {
				fail("RemoveServices(s%d) removed a service a live transaction used", s)
			}
		}
		if _, ok := e.LookupService(name); ok || e.ServiceName(s) != "" || e.ValidService(s) {
			fail("s%d still known after its removal", s)
		}
		for x := range n {
			m.succ[s][x], m.succ[x][s] = false, false
			if e.HasEdge(ServiceID(x), s) || e.HasEdge(s, ServiceID(x)) {
				fail("edge of removed s%d left", s)
			}
		}
		for _, mt := range m.txns {
			for ed := range mt.future {
				if ed[0] == s || ed[1] == s {
					delete(mt.future, ed)
				}
			}
			for _, sb := range mt.subs {
				delete(sb.done, s)
			}
		}
		forgotten++
		if id := e.Service(fmt.Sprint("new", forgotten)); id != s {
			fail("the service interned after removing s%d got id %d, want its id back", s, id)
		}
		for y := range n {
			if ServiceID(y) != s && rng.Float64() < p {
				m.succ[s][y] = true
				e.AddEdge(s, ServiceID(y))
			}
		}
	}

	var nextTxn int
	var nextSub SubID
	ids := func() []string { // live ids, in a reproducible order
		return slices.Sorted(func(yield func(string) bool) {
			for id := range m.txns {
				if !yield(id) {
					return
				}
			}
		})
	}
	subsOf := func(mt *mtxn) []SubID {
		return slices.Sorted(func(yield func(SubID) bool) {
			for id := range mt.subs {
				if !yield(id) {
					return
				}
			}
		})
	}
	var ended []string
	lastReturned := map[string]SubID{} // per live transaction, its sub that returned last
	for step := 0; step < steps && (more == nil || more()); step++ {
		if hostile && rng.IntN(5) == 0 {
			hostileStep(e, m, n, vers, rng, ids(), ended, lastReturned, fail)
			check()
			continue
		}
		live := ids()
		if len(live) == 0 || len(live) < 4 && rng.IntN(8) == 0 {
			nextTxn++
			nextSub++
			id := fmt.Sprint("t", nextTxn)
			entry, ver := ServiceID(rng.IntN(n)), vers[rng.IntN(2)]
			if err := e.Begin(id, entry, ver, nextSub, Owner(1+rng.IntN(3))); err != nil {
				fail("Begin: %v", err)
			}
			m.begin(id, entry, ver, nextSub)
			m.txns[id].settle()
			never[id] = make([]bool, n)
		} else {
			id := live[rng.IntN(len(live))]
			mt := m.txns[id]
			subs := subsOf(mt)
			s := subs[rng.IntN(len(subs))]
			ms := mt.subs[s]
			switch r := rng.IntN(100); {
			case r < 45: // Call a successor the sub has not said Done to
				var ys []ServiceID
				for y := range n {
					if m.succ[ms.svc][y] && !ms.done[ServiceID(y)] {
						ys = append(ys, ServiceID(y))
					}
				}
				if len(ys) == 0 {
					continue
				}
				y := ys[rng.IntN(len(ys))]
				if never[id][y] {
					fail("unsound: %s calls s%d, whose future was once false", id, y)
				}
				nextSub++
				ver := vers[rng.IntN(2)]
				info, err := e.Call(id, ms.svc, mt.used[ms.svc], s, y, nextSub, ver)
				if err != nil || info != (CallInfo{}) {
					fail("Call: %+v %v", info, err)
				}
				mt.call(ms.svc, y, nextSub, ver) // a Call makes no edge removable
			case r < 75:
				if s == mt.root {
					continue
				}
				if err := e.Return(id, s); err != nil {
					fail("Return: %v", err)
				}
				mt.ret(s)
				mt.settle()
				lastReturned[id] = s
			case r < 95:
				y := ServiceID(rng.IntN(n))
				if err := e.Done(id, s, y); err != nil {
					fail("Done: %v", err)
				}
				ms.done[y] = true
				mt.settle()
			default:
				if err := e.End(id); err != nil {
					fail("End: %v", err)
				}
				delete(m.txns, id)
				delete(never, id)
				ended = append(ended, id)
			}
		}
		check()
		if rng.IntN(12) == 0 {
			forget(ServiceID(rng.IntN(n)))
			check()
		}
		if rng.IntN(10) == 0 {
			take(1 + rng.IntN(4))
		}
	}

	// Drained, the store holds exactly the live transactions' records.
	take(1 << 20)
	if e.DirtyLen() != 0 || len(store) != len(m.txns) {
		fail("store has %d records, %d live, %d dirty", len(store), len(m.txns), e.DirtyLen())
	}
	for id, r := range store {
		info, _ := e.Txn(id)
		if !slices.Equal(r.Used, info.Used) || r.Owner != info.Owner || r.Entry != info.Entry {
			fail("stored %+v, live %+v", r, info)
		}
	}
	for _, id := range ids() {
		if err := e.End(id); err != nil {
			fail("End: %v", err)
		}
	}
	take(1 << 20)
	if len(store) != 0 {
		fail("store keeps %d records of ended transactions", len(store))
	}
}

// hostileStep sends the engine one event it must reject, chosen by rng
// among the live transactions and the ended ones, and fails unless it is
// rejected with the expected error. It changes nothing in the model.
func hostileStep(e *Engine, m *model, n int, vers []VersionID, rng picker, live, ended []string,
	lastReturned map[string]SubID, fail func(string, ...any)) {
	want := func(what string, got, wantErr error) {
		if got != wantErr {
			fail("%s = %v, want %v", what, got, wantErr)
		}
	}
	bad := ServiceID(n + rng.IntN(3)) // not a service
	if len(live) == 0 || rng.IntN(4) == 0 {
		switch rng.IntN(6) {
		case 0:
			want("Begin with no id", e.Begin("", 0, vers[0], 1, 1), ErrInvalid)
		case 1:
			want("Begin with sub 0", e.Begin("fresh", 0, vers[0], 0, 1), ErrInvalid)
		case 2:
			want("Begin at no service", e.Begin("fresh", bad, vers[0], 1, 1), ErrInvalid)
		case 3:
			want("Begin at no version", e.Begin("fresh", 0, VersionID(len(vers)+1+rng.IntN(3)), 1, 1), ErrInvalid)
		case 4:
			want("End of an unknown transaction", e.End("never-begun"), ErrUnknownTxn)
		default:
			if len(ended) == 0 {
				return
			}
			id := ended[rng.IntN(len(ended))]
			if m.txns[id] != nil {
				return // begun again (ids are not reused, but be safe)
			}
			want("Return in an ended transaction", e.Return(id, 1), ErrTxnEnded)
			want("Done in an ended transaction", e.Done(id, 1, 0), ErrTxnEnded)
			want("End of an ended transaction", e.End(id), ErrTxnEnded)
		}
		return
	}
	id := live[rng.IntN(len(live))]
	mt := m.txns[id]
	var subs []SubID
	for s := range mt.subs {
		subs = append(subs, s)
	}
	slices.Sort(subs)
	s := subs[rng.IntN(len(subs))]
	ms := mt.subs[s]
	other := subs[rng.IntN(len(subs))] // a running sub, maybe s
	unknown := SubID(1<<62 + rng.IntN(1000))
	v := vers[rng.IntN(len(vers))]
	switch rng.IntN(13) {
	case 0:
		want("Begin of a live transaction", e.Begin(id, ms.svc, v, unknown, 1), ErrTxnExists)
	case 1:
		_, err := e.Call(id, ms.svc, mt.used[ms.svc], s, ms.svc, other, v)
		if other == s {
			want("Call of a sub as its own caller", err, ErrInvalid)
		} else {
			want("Call of a running sub", err, ErrSubExists)
		}
	case 2:
		if y := ServiceID(rng.IntN(n)); y != ms.svc {
			_, err := e.Call(id, y, v, s, ms.svc, unknown, v)
			want("Call from a service its caller sub does not run at", err, ErrNotOwner)
		}
	case 3:
		_, err := e.Call(id, ms.svc, mt.used[ms.svc], s, bad, unknown, v)
		want("Call to no service", err, ErrInvalid)
	case 4:
		_, err := e.Call(id, ms.svc, mt.used[ms.svc], 0, ms.svc, unknown, v)
		want("Call with caller sub 0", err, ErrInvalid)
	case 5:
		_, err := e.Call(id, ms.svc, mt.used[ms.svc], s, ms.svc, unknown, VersionID(len(vers)+1))
		want("Call at no version", err, ErrInvalid)
	case 6:
		want("Return of the root", e.Return(id, mt.root), ErrInvalid)
	case 7:
		want("Return of an unknown sub", e.Return(id, unknown), ErrUnknownSub)
	case 8:
		want("Return of sub 0", e.Return(id, 0), ErrInvalid)
	case 9:
		// Kept until the sub's Call, which never comes: nothing the model
		// sees changes (check() verifies it).
		if err := e.Done(id, unknown, ms.svc); err != nil && err != ErrEarlyLimit {
			fail("Done of a sub not started = %v, want nil or %v", err, ErrEarlyLimit)
		}
	case 10:
		if r := lastReturned[id]; r != 0 {
			want("Return of a returned sub", e.Return(id, r), ErrSubReturned)
		}
	case 11:
		if r := lastReturned[id]; r != 0 {
			want("Done of a returned sub", e.Done(id, r, ms.svc), ErrSubReturned)
		}
	default:
		want("Done to no service", e.Done(id, s, bad), ErrInvalid)
	}
}

// blockersUsingScan is BlockersUsing by a scan of the blockers of s: the
// index's definition, for tests.
func (e *Engine) blockersUsingScan(s ServiceID, v VersionID) int {
	n := len(e.legacy)
	if !e.validSvc(s) {
		return n
	}
	for t := range e.blockers[s] {
		if u, ok := t.version(s); ok && u == v {
			n++
		}
	}
	return n
}
