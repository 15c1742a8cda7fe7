package graph

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustCall(t *testing.T, e *Engine, txn string, from ServiceID, caller SubID, to ServiceID, sub SubID, ver VersionID) CallInfo {
	t.Helper()
	info, err := e.Call(txn, from, ver, caller, to, sub, ver)
	must(t, err)
	return info
}

// chain interns services a, b, c, ... with static edges a→b→c→...
func chain(e *Engine, n int) []ServiceID {
	s := make([]ServiceID, n)
	for i := range s {
		s[i] = e.Service(string(rune('a' + i)))
		if i > 0 {
			e.AddEdge(s[i-1], s[i])
		}
	}
	return s
}

// state is everything observable through the engine's API.
type state struct {
	Txns                  map[string]TxnInfo
	Free                  []bool
	Blockers, Used        []int
	Future, Past          map[string][]bool
	Live, Dirty, Services int
	Edges                 [][]ServiceID
	Reorder               ReorderStats
}

func snapshot(e *Engine) state {
	s := state{Txns: map[string]TxnInfo{}, Future: map[string][]bool{}, Past: map[string][]bool{},
		Live: e.Live(), Dirty: e.DirtyLen(), Services: e.NumServices(), Reorder: e.ReorderStats()}
	e.ForEachTxn(func(ti TxnInfo) bool {
		s.Txns[ti.ID] = ti
		for i := range e.NumServices() {
			s.Future[ti.ID] = append(s.Future[ti.ID], e.HasFuture(ti.ID, ServiceID(i)))
			s.Past[ti.ID] = append(s.Past[ti.ID], e.HasPast(ti.ID, ServiceID(i)))
		}
		return true
	})
	for i := range e.NumServices() {
		id := ServiceID(i)
		s.Free = append(s.Free, e.Free(id))
		s.Blockers = append(s.Blockers, e.BlockerCount(id))
		s.Used = append(s.Used, e.UsedCount(id))
		s.Edges = append(s.Edges, e.Successors(id))
	}
	return s
}

func TestErrorsChangeNothing(t *testing.T) {
	e := New()
	s := chain(e, 3)
	a, b, c := s[0], s[1], s[2]
	v1 := e.Version("v1")
	must(t, e.Begin("T", a, v1, 1, 1))
	mustCall(t, e, "T", a, 1, b, 2, v1)
	mustCall(t, e, "T", b, 2, c, 3, v1)
	must(t, e.Return("T", 3))
	must(t, e.Done("T", 2, c))
	must(t, e.Begin("gone", a, v1, 1, 1))
	must(t, e.End("gone"))
	mustCall(t, e, "imp", b, 5, c, 6, v1) // implicit: sub 5 waits at b
	// Hints waiting for their Call, up to the limit.
	for i := range maxEarly {
		must(t, e.Done("T", SubID(100+i), c))
		must(t, e.Done("unseen", SubID(100+i), c))
	}
	call := func(txn string, from ServiceID, fromVer VersionID, caller SubID, to ServiceID, sub SubID, toVer VersionID) func() error {
		return func() error { _, err := e.Call(txn, from, fromVer, caller, to, sub, toVer); return err }
	}
	for _, tc := range []struct {
		name string
		want error
		ev   func() error
	}{
		{"Begin empty id", ErrInvalid, func() error { return e.Begin("", a, v1, 9, 1) }},
		{"Begin zero sub", ErrInvalid, func() error { return e.Begin("N", a, v1, 0, 1) }},
		{"Begin unknown service", ErrInvalid, func() error { return e.Begin("N", 99, v1, 9, 1) }},
		{"Begin unknown version", ErrInvalid, func() error { return e.Begin("N", a, 99, 9, 1) }},
		{"Begin live", ErrTxnExists, func() error { return e.Begin("T", a, v1, 9, 1) }},
		{"Begin implicit, root sub running elsewhere", ErrSubExists, func() error { return e.Begin("imp", a, v1, 5, 1) }},
		{"Call empty id", ErrInvalid, call("", a, v1, 1, b, 9, v1)},
		{"Call zero sub", ErrInvalid, call("T", a, v1, 1, b, 0, v1)},
		{"Call zero caller", ErrInvalid, call("T", a, v1, 0, b, 9, v1)},
		{"Call sub is caller", ErrInvalid, call("T", a, v1, 1, b, 1, v1)},
		{"Call unknown from", ErrInvalid, call("T", 99, v1, 1, b, 9, v1)},
		{"Call unknown to", ErrInvalid, call("T", a, v1, 1, 99, 9, v1)},
		{"Call unknown from version", ErrInvalid, call("T", a, 99, 1, b, 9, v1)},
		{"Call unknown to version", ErrInvalid, call("T", a, v1, 1, b, 9, 99)},
		{"Call caller runs elsewhere", ErrNotOwner, call("T", c, v1, 1, b, 9, v1)},
		{"Call ended", ErrTxnEnded, call("gone", a, v1, 1, b, 9, v1)},
		{"Call running sub", ErrSubExists, call("T", a, v1, 1, b, 2, v1)},
		{"Call returned sub", ErrSubReturned, call("T", b, v1, 2, c, 3, v1)},
		{"Call root sub", ErrSubExists, call("T", b, v1, 2, c, 1, v1)},
		{"Call implicit sub at another service", ErrSubExists, call("imp", a, v1, 9, c, 5, v1)},
		{"Return empty id", ErrInvalid, func() error { return e.Return("", 2) }},
		{"Return zero sub", ErrInvalid, func() error { return e.Return("T", 0) }},
		{"Return root", ErrInvalid, func() error { return e.Return("T", 1) }},
		{"Return unknown sub", ErrUnknownSub, func() error { return e.Return("T", 42) }},
		{"Return returned sub", ErrSubReturned, func() error { return e.Return("T", 3) }},
		{"Return unknown txn", ErrUnknownTxn, func() error { return e.Return("nope", 2) }},
		{"Return ended", ErrTxnEnded, func() error { return e.Return("gone", 2) }},
		{"Done empty id", ErrInvalid, func() error { return e.Done("", 2, c) }},
		{"Done zero sub", ErrInvalid, func() error { return e.Done("T", 0, c) }},
		{"Done unknown service", ErrInvalid, func() error { return e.Done("T", 2, 99) }},
		{"Done returned sub", ErrSubReturned, func() error { return e.Done("T", 3, c) }},
		{"Done unknown sub over the limit", ErrEarlyLimit, func() error { return e.Done("T", 42, c) }},
		{"Done unknown txn over the limit", ErrEarlyLimit, func() error { return e.Done("unseen", 2, c) }},
		{"Done unknown sub again", nil, func() error { return e.Done("T", 100, c) }},
		{"Done unknown txn again", nil, func() error { return e.Done("unseen", 100, c) }},
		{"Done ended", ErrTxnEnded, func() error { return e.Done("gone", 2, c) }},
		{"Done again", nil, func() error { return e.Done("T", 2, c) }},
		{"End empty id", ErrInvalid, func() error { return e.End("") }},
		{"End unknown", ErrUnknownTxn, func() error { return e.End("nope") }},
		{"End ended", ErrTxnEnded, func() error { return e.End("gone") }},
		{"AddLegacy empty id", ErrInvalid, func() error { return e.AddLegacy("", 1, nil) }},
		{"AddLegacy unknown service", ErrInvalid, func() error { return e.AddLegacy("L", 1, []Use{{a, v1}, {99, v1}}) }},
		{"AddLegacy unknown version", ErrInvalid, func() error { return e.AddLegacy("L", 1, []Use{{a, 99}}) }},
		{"AddLegacy live", ErrTxnExists, func() error { return e.AddLegacy("T", 1, nil) }},
		{"AddLegacy implicit", ErrTxnExists, func() error { return e.AddLegacy("imp", 1, nil) }},
	} {
		before := snapshot(e)
		if err := tc.ev(); !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("%s: err %v, want %v", tc.name, err, tc.want)
		}
		if after := snapshot(e); !reflect.DeepEqual(before, after) {
			t.Errorf("%s changed the state:\n%+v\n%+v", tc.name, before, after)
		}
	}
}

func TestOutOfOrder(t *testing.T) {
	e := New()
	s := chain(e, 3)
	a, b, c := s[0], s[1], s[2]
	v1, v2 := e.Version("v1"), e.Version("v2")
	running := func(txn string) map[SubID]ServiceID {
		ti, _ := e.Txn(txn)
		m := map[SubID]ServiceID{}
		for _, r := range ti.Running {
			m[r.ID] = r.Service
		}
		return m
	}

	t.Run("downstream Call first", func(t *testing.T) {
		must(t, e.Begin("T", a, v1, 1, 1))
		mustCall(t, e, "T", b, 2, c, 3, v1) // sub 2 at b starts implicitly
		if got := running("T"); !reflect.DeepEqual(got, map[SubID]ServiceID{1: a, 2: b, 3: c}) {
			t.Fatalf("running %v", got)
		}
		if info := mustCall(t, e, "T", a, 1, b, 2, v2); info.Implicit {
			t.Error("Implicit for a known transaction")
		}
		if got := running("T"); len(got) != 3 {
			t.Fatalf("confirming Call counted sub 2 twice: %v", got)
		}
		if v, _ := e.Used("T", b); v != v1 {
			t.Errorf("used[b] = %d, want the first use %d", v, v1)
		}
		if _, err := e.Call("T", a, v1, 1, b, 2, v1); !errors.Is(err, ErrSubExists) {
			t.Errorf("second Call of a confirmed sub: %v", err)
		}
		must(t, e.Return("T", 2))
		if _, ok := running("T")[2]; ok || len(running("T")) != 2 {
			t.Fatalf("sub 2 still running after its Return: %v", running("T"))
		}
		must(t, e.End("T"))
	})

	t.Run("Call before Begin", func(t *testing.T) {
		info := mustCall(t, e, "U", a, 1, b, 2, v1)
		if !info.Implicit {
			t.Error("CallInfo.Implicit not set")
		}
		ti, _ := e.Txn("U")
		if !ti.Implicit || ti.Owner != 0 || ti.Entry != a {
			t.Errorf("implicit txn %+v", ti)
		}
		must(t, e.Begin("U", a, v1, 1, 5))
		ti, _ = e.Txn("U")
		if ti.Implicit || ti.Owner != 5 || len(ti.Running) != 2 {
			t.Errorf("after Begin %+v", ti)
		}
		if err := e.Return("U", 1); !errors.Is(err, ErrInvalid) {
			t.Errorf("Return of the root after Begin: %v", err)
		}
		if err := e.Begin("U", a, v1, 1, 5); !errors.Is(err, ErrTxnExists) {
			t.Errorf("second Begin: %v", err)
		}
		must(t, e.End("U"))
	})

	t.Run("Call before upstream Call and Begin", func(t *testing.T) {
		mustCall(t, e, "V", b, 2, c, 3, v1)
		must(t, e.Begin("V", a, v2, 1, 5))
		ti, _ := e.Txn("V")
		if ti.Entry != a || ti.Implicit || !reflect.DeepEqual(running("V"), map[SubID]ServiceID{1: a, 2: b, 3: c}) {
			t.Errorf("after Begin %+v", ti)
		}
		if v, _ := e.Used("V", a); v != v2 {
			t.Errorf("used[entry] = %d, want %d", v, v2)
		}
		must(t, e.Return("V", 2)) // an implicit sub can return
		if _, err := e.Call("V", a, v1, 1, b, 2, v1); !errors.Is(err, ErrSubReturned) {
			t.Errorf("late Call of a returned sub: %v, want ErrSubReturned", err)
		}
		if got := running("V"); !reflect.DeepEqual(got, map[SubID]ServiceID{1: a, 3: c}) {
			t.Errorf("late Call of a returned sub started it again: %v", got)
		}
		must(t, e.End("V"))
	})
}

func TestTombstones(t *testing.T) {
	v1 := VersionID(0)
	t.Run("late events", func(t *testing.T) {
		e := New()
		s := chain(e, 2)
		must(t, e.Begin("T", s[0], v1, 1, 1))
		must(t, e.End("T"))
		if _, err := e.Call("T", s[0], v1, 1, s[1], 2, v1); !errors.Is(err, ErrTxnEnded) || e.Live() != 0 {
			t.Errorf("Call after End: %v, live %d", err, e.Live())
		}
		for _, err := range []error{e.Return("T", 2), e.Done("T", 1, s[1]), e.End("T")} {
			if !errors.Is(err, ErrTxnEnded) {
				t.Errorf("late event: %v", err)
			}
		}
		must(t, e.Begin("T", s[0], v1, 1, 1)) // afresh
		mustCall(t, e, "T", s[0], 1, s[1], 2, v1)
		must(t, e.End("T"))
		if err := e.End("T"); !errors.Is(err, ErrTxnEnded) {
			t.Errorf("End after second End: %v", err)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		e := New(WithTombstones(2))
		s := chain(e, 2)
		end := func(id string) {
			must(t, e.Begin(id, s[0], v1, 1, 1))
			must(t, e.End(id))
		}
		remembered := func(id string) bool { return errors.Is(e.Return(id, 2), ErrTxnEnded) }
		for _, id := range []string{"a", "b", "c", "d", "e"} {
			end(id)
		}
		// At least the last 2 are remembered, at most the last 4.
		if remembered("a") || remembered("b") || !remembered("c") || !remembered("d") || !remembered("e") {
			t.Error("tombstones not forgotten oldest first")
		}
		if info := mustCall(t, e, "a", s[0], 1, s[1], 2, v1); !info.Implicit {
			t.Error("forgotten id not created implicitly")
		}
		must(t, e.End("a"))
		if !remembered("a") {
			t.Error("id ended again not remembered")
		}
	})
	t.Run("none", func(t *testing.T) {
		e := New(WithTombstones(0))
		s := chain(e, 1)
		must(t, e.Begin("T", s[0], v1, 1, 1))
		must(t, e.End("T"))
		if err := e.End("T"); !errors.Is(err, ErrUnknownTxn) {
			t.Errorf("End with no tombstones: %v", err)
		}
	})
}

func TestLearnedEdge(t *testing.T) {
	e := New()
	a, b, c := e.Service("a"), e.Service("b"), e.Service("c")
	e.AddEdge(a, b)
	e.AddEdge(a, c)
	v1 := e.Version("v1")
	must(t, e.Begin("T1", a, v1, 1, 1))
	mustCall(t, e, "T1", a, 1, c, 2, v1)
	must(t, e.Return("T1", 2))
	must(t, e.Done("T1", 1, c))
	if !e.Free(c) {
		t.Fatal("c not free: T1 used it but can no longer call it")
	}

	must(t, e.Begin("T2", b, v1, 10, 1))
	if info := mustCall(t, e, "T2", b, 10, c, 11, v1); !info.LearnedEdge || info.Implicit {
		t.Errorf("CallInfo %+v", info)
	}
	if !e.HasEdge(b, c) || !slices.Equal(e.Successors(b), []ServiceID{c}) {
		t.Error("edge b→c not learned")
	}
	if ti, _ := e.Txn("T2"); !ti.LearnedEdge {
		t.Error("T2 not marked LearnedEdge")
	}
	if ti, _ := e.Txn("T1"); ti.LearnedEdge {
		t.Error("T1 marked LearnedEdge")
	}
	if info := mustCall(t, e, "T2", b, 10, c, 12, v1); info.LearnedEdge {
		t.Error("known edge learned again")
	}
	must(t, e.End("T2"))
	// b→c puts c back into T1's future: a may still call b, b may call c.
	bs := e.Blockers(c, 10)
	if len(bs) != 1 || bs[0].Txn != "T1" || bs[0].FutureVia != a || e.Free(c) {
		t.Errorf("after learning b→c, blockers of c = %+v", bs)
	}
}

func TestStaticGraph(t *testing.T) {
	e := New()
	a, b := e.Service("a"), e.Service("b")
	if e.Service("a") != a || e.NumServices() != 2 || e.ServiceName(b) != "b" || e.ServiceName(7) != "" {
		t.Error("service interning")
	}
	if id, ok := e.LookupService("b"); !ok || id != b {
		t.Error("LookupService(b)")
	}
	if _, ok := e.LookupService("x"); ok || e.NumServices() != 2 {
		t.Error("LookupService created a service")
	}
	if e.Version("") != 0 || e.Version("v1") != 1 || e.Version("v1") != 1 || e.VersionName(1) != "v1" || e.VersionName(9) != "" {
		t.Error("version interning")
	}
	if !e.AddEdge(a, b) || e.AddEdge(a, b) || e.AddEdge(a, 9) || !e.HasEdge(a, b) || e.HasEdge(b, a) || e.HasEdge(9, a) {
		t.Error("AddEdge/HasEdge")
	}
	if e.Successors(9) != nil || e.Successors(b) != nil {
		t.Error("Successors")
	}
}

// TestManyServices crosses bitset word boundaries while transactions are live.
func TestManyServices(t *testing.T) {
	e := New()
	v1 := e.Version("v1")
	s0 := e.Service("s0")
	must(t, e.Begin("T", s0, v1, 1, 1))
	var last ServiceID
	for i := 1; i < 200; i++ {
		last = e.Service(fmt.Sprint("s", i))
	}
	e.AddEdge(s0, last)
	mustCall(t, e, "T", s0, 1, last, 2, v1)
	must(t, e.Return("T", 2))
	if e.Free(last) || !e.HasFuture("T", last) || e.HasFuture("T", last-1) {
		t.Fatal("service in the fourth word not blocked")
	}
	must(t, e.Done("T", 1, last))
	if !e.Free(last) || e.Free(s0) {
		t.Error("hint on the fourth word ignored")
	}
	must(t, e.End("T"))
	if !e.Free(s0) {
		t.Error("s0 blocked after End")
	}
}

// TestBrokenHint: a Call the caller said it would not make is applied, and
// the hint no longer holds.
func TestBrokenHint(t *testing.T) {
	e := New()
	s := chain(e, 2)
	must(t, e.Begin("T", s[0], 0, 1, 1))
	must(t, e.Done("T", 1, s[1]))
	if e.HasFuture("T", s[1]) {
		t.Fatal("hint ignored")
	}
	mustCall(t, e, "T", s[0], 1, s[1], 2, 0)
	must(t, e.Return("T", 2))
	if ti, _ := e.Txn("T"); !e.HasFuture("T", s[1]) || ti.Running[0].Done != nil {
		t.Errorf("broken hint kept: %+v", ti)
	}
}

// TestReturnDropsHints: hints go with their sub, and a late nested Call of
// the returned sub (from the callee's stream) brings back neither the sub
// nor its hints.
func TestReturnDropsHints(t *testing.T) {
	e := New()
	a, b, c, d := e.Service("a"), e.Service("b"), e.Service("c"), e.Service("d")
	e.AddEdge(a, b)
	e.AddEdge(b, c)
	e.AddEdge(b, d)
	must(t, e.Begin("T", a, 0, 1, 1))
	mustCall(t, e, "T", a, 1, b, 2, 0)
	must(t, e.Done("T", 1, b))
	must(t, e.Done("T", 2, c))
	if e.HasFuture("T", c) || !e.HasFuture("T", d) {
		t.Fatal("hint ignored")
	}
	must(t, e.Return("T", 2))
	if hs := e.txns["T"].hints; len(hs) != 1 || hs[0] != (hint{sub: 1, to: b}) {
		t.Fatalf("hints after the Return %v, want sub 2's gone", hs)
	}
	mustCall(t, e, "T", b, 2, d, 3, 0) // late: sent by b before the Return
	ti, _ := e.Txn("T")
	if len(ti.Running) != 2 || ti.Running[1].ID != 3 || e.HasFuture("T", c) || e.HasFuture("T", b) {
		t.Errorf("the late Call started sub 2 again: %+v", ti)
	}
}

// TestFanOut: a successor stays in the future until every running sub at
// the service is done with it.
func TestFanOut(t *testing.T) {
	e := New()
	s := chain(e, 3)
	must(t, e.Begin("T", s[0], 0, 1, 1))
	mustCall(t, e, "T", s[0], 1, s[1], 2, 0)
	mustCall(t, e, "T", s[0], 1, s[1], 3, 0)
	must(t, e.Done("T", 1, s[1]))
	must(t, e.Done("T", 2, s[2]))
	if !e.HasFuture("T", s[2]) {
		t.Error("sub 3 may still call c")
	}
	must(t, e.Done("T", 3, s[2]))
	if e.HasFuture("T", s[2]) {
		t.Error("every sub at b is done with c")
	}
	ti, _ := e.Txn("T")
	if want := []SubInfo{{1, s[0], []ServiceID{s[1]}}, {2, s[1], []ServiceID{s[2]}}, {3, s[1], []ServiceID{s[2]}}}; !reflect.DeepEqual(ti.Running, want) {
		t.Errorf("Running %+v, want %+v", ti.Running, want)
	}
}

func TestLegacy(t *testing.T) {
	e := New()
	a, b := e.Service("a"), e.Service("b")
	v1, v2 := e.Version("v1"), e.Version("v2")
	must(t, e.AddLegacy("L", 3, []Use{{b, v1}, {a, v2}, {b, v2}}))
	must(t, e.Begin("T", a, v1, 1, 1))
	c := e.Service("c") // interned after L was restored
	for _, s := range []ServiceID{a, b, c} {
		if e.Free(s) || !e.HasFuture("L", s) || !e.HasPast("L", s) {
			t.Errorf("legacy L does not block %d", s)
		}
	}
	if e.BlockerCount(a) != 2 || e.BlockerCount(c) != 1 || e.UsedCount(b) != 1 || e.UsedCount(c) != 0 {
		t.Error("counts with a legacy transaction")
	}
	if v, _ := e.Used("L", b); v != v1 {
		t.Errorf("used[b] = %d, want the first %d", v, v1)
	}
	ti, _ := e.Txn("L")
	if !ti.Legacy || ti.Entry != b || ti.Owner != 3 || !slices.Equal(ti.Blocks, []ServiceID{a, b, c}) {
		t.Errorf("legacy info %+v", ti)
	}
	if bs := e.Blockers(c, 10); !reflect.DeepEqual(bs, []Blocker{{Txn: "L", Legacy: true}}) {
		t.Errorf("blockers of c %+v", bs)
	}
	if bs := e.Blockers(b, 10); !reflect.DeepEqual(bs, []Blocker{{Txn: "L", Legacy: true, PastVersion: v1}}) {
		t.Errorf("blockers of b %+v", bs)
	}
	mustCall(t, e, "L", a, 1, c, 2, v2) // events still apply
	if bs := e.Blockers(c, 10); !reflect.DeepEqual(bs, []Blocker{{Txn: "L", Legacy: true, Running: true, PastVersion: v2, FutureVia: c, FutureViaOK: true}}) {
		t.Errorf("blockers of c %+v", bs)
	}
	must(t, e.AddLegacy("L2", 3, nil))
	if len(e.Blockers(c, 1)) != 1 || len(e.Blockers(c, 2)) != 2 {
		t.Error("Blockers limit with legacy transactions")
	}
	e.EndOwnedBy(3)
	if !e.Free(b) || !e.Free(c) || e.Free(a) || e.UsedCount(b) != 0 {
		t.Error("legacy End")
	}
}

func TestEndOwnedBy(t *testing.T) {
	e := New()
	s := chain(e, 2)
	must(t, e.Begin("T1", s[0], 0, 1, 1))
	must(t, e.Begin("T2", s[1], 0, 1, 1))
	must(t, e.Begin("T3", s[1], 0, 1, 2))
	must(t, e.AddLegacy("L", 1, nil))
	ids := e.EndOwnedBy(1)
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"L", "T1", "T2"}) || e.Live() != 1 {
		t.Errorf("EndOwnedBy(1) = %v, live %d", ids, e.Live())
	}
	if !e.Free(s[0]) || e.Free(s[1]) {
		t.Error("blockers of ended transactions kept")
	}
	if err := e.Return("T1", 2); !errors.Is(err, ErrTxnEnded) {
		t.Errorf("late event: %v", err)
	}
	if ids := e.EndOwnedBy(9); len(ids) != 0 || e.Live() != 1 {
		t.Errorf("EndOwnedBy(9) = %v", ids)
	}
}

func TestBlockers(t *testing.T) {
	e := New()
	s := chain(e, 3)
	a, b, c := s[0], s[1], s[2]
	va, vb, vc := e.Version("va"), e.Version("vb"), e.Version("vc")
	must(t, e.Begin("T", a, va, 1, 1))
	mustCall(t, e, "T", a, 1, b, 2, vb)
	must(t, e.Done("T", 1, b))
	mustCall(t, e, "T", b, 2, c, 3, vc)
	must(t, e.Return("T", 3))
	for svc, want := range map[ServiceID]Blocker{
		a: {Txn: "T", Running: true, PastVersion: va, FutureVia: a, FutureViaOK: true},
		b: {Txn: "T", Running: true, PastVersion: vb, FutureVia: b, FutureViaOK: true},
		c: {Txn: "T", PastVersion: vc, FutureVia: b, FutureViaOK: true}, // a is done with b
	} {
		if got := e.Blockers(svc, 10); !reflect.DeepEqual(got, []Blocker{want}) {
			t.Errorf("Blockers(%d) = %+v, want %+v", svc, got, want)
		}
	}
	must(t, e.Begin("U", c, 0, 1, 1))
	must(t, e.Begin("V", c, 0, 1, 1))
	if got := e.Blockers(c, 2); len(got) != 2 || got[0].Txn == got[1].Txn {
		t.Errorf("Blockers(c, 2) = %+v", got)
	}
	if got := e.Blockers(c, 0); got != nil {
		t.Errorf("Blockers(c, 0) = %+v", got)
	}
	got := map[string]bool{}
	for _, bl := range e.Blockers(c, 10) {
		got[bl.Txn] = true
	}
	if len(got) != 3 || e.BlockerCount(c) != 3 {
		t.Errorf("Blockers(c, 10) = %v", got)
	}
}

func TestTakeDirty(t *testing.T) {
	type rec struct {
		txn     string
		deleted bool
	}
	take := func(e *Engine, limit int) []rec {
		var out []rec
		n := e.TakeDirty(limit, func(r Record) { out = append(out, rec{r.Txn, r.Deleted}) })
		if n != len(out) {
			t.Fatalf("TakeDirty returned %d, emitted %d", n, len(out))
		}
		return out
	}
	e := New()
	s := chain(e, 3)
	v1 := e.Version("v1")

	must(t, e.Begin("A", s[0], v1, 1, 1))
	must(t, e.End("A"))
	if e.DirtyLen() != 0 || len(take(e, 10)) != 0 {
		t.Error("a transaction begun and ended between takes is written")
	}

	must(t, e.Begin("B", s[0], v1, 1, 7))
	var got Record
	e.TakeDirty(10, func(r Record) { got = r; got.Used = slices.Clone(r.Used) })
	if !reflect.DeepEqual(got, Record{Txn: "B", Owner: 7, Entry: s[0], Used: []Use{{s[0], v1}}}) {
		t.Errorf("record %+v", got)
	}
	must(t, e.Done("B", 1, s[1]))
	mustCall(t, e, "B", s[0], 1, s[0], 2, v1) // used unchanged
	must(t, e.Return("B", 2))
	if e.DirtyLen() != 0 {
		t.Error("an event that leaves used unchanged made a write")
	}
	mustCall(t, e, "B", s[0], 1, s[1], 3, v1)
	if e.DirtyLen() != 1 {
		t.Error("a new use made no write")
	}
	must(t, e.End("B"))
	if r := take(e, 10); !slices.Equal(r, []rec{{"B", true}}) {
		t.Errorf("emitted, changed, ended: %v", r)
	}

	must(t, e.Begin("B", s[0], v1, 1, 7)) // after its deletion was taken
	must(t, e.End("B"))
	if r := take(e, 10); len(r) != 0 {
		t.Errorf("begun and ended after its deletion was taken: %v", r)
	}

	for _, id := range []string{"C1", "C2", "C3", "C4", "C5"} {
		must(t, e.Begin(id, s[0], v1, 1, 1))
	}
	if r := take(e, 2); !slices.Equal(r, []rec{{"C1", false}, {"C2", false}}) || e.DirtyLen() != 3 {
		t.Errorf("take 2: %v, %d left", r, e.DirtyLen())
	}
	if r := take(e, 10); len(r) != 3 {
		t.Errorf("take rest: %v", r)
	}

	// A re-Begin supersedes the pending deletion: one put, no duplicate.
	must(t, e.End("C1"))
	must(t, e.Begin("C1", s[1], v1, 1, 1))
	if r := take(e, 10); !slices.Equal(r, []rec{{"C1", false}}) {
		t.Errorf("ended and begun again: %v", r)
	}
	must(t, e.End("C1"))
	must(t, e.Begin("C1", s[1], v1, 1, 1))
	must(t, e.End("C1")) // the stored record of the first incarnation must go
	if r := take(e, 10); !slices.Equal(r, []rec{{"C1", true}}) {
		t.Errorf("ended, begun and ended again: %v", r)
	}

	must(t, e.AddLegacy("L", 1, []Use{{s[2], v1}}))
	e.TakeDirty(10, func(r Record) { got = r })
	if !got.Legacy || got.Entry != s[2] {
		t.Errorf("legacy record %+v", got)
	}
	must(t, e.AddLegacy("L2", 1, nil))
	must(t, e.End("L2")) // stored before the restart
	if r := take(e, 10); !slices.Equal(r, []rec{{"L2", true}}) {
		t.Errorf("legacy ended before a take: %v", r)
	}

	// The implicit creation of a forgotten id supersedes its deletion too.
	e = New(WithTombstones(0))
	s = chain(e, 2)
	v1 = e.Version("v1")
	must(t, e.Begin("D", s[0], v1, 1, 1))
	take(e, 10)
	must(t, e.End("D"))
	mustCall(t, e, "D", s[0], 1, s[1], 2, v1)
	if r := take(e, 10); !slices.Equal(r, []rec{{"D", false}}) || e.DirtyLen() != 0 {
		t.Errorf("implicitly recreated: %v", r)
	}
	if take(e, 0) != nil {
		t.Error("TakeDirty(0) emitted")
	}
}

// TestTakeDirtyReleases: the queue keeps no stale transaction reachable.
func TestTakeDirtyReleases(t *testing.T) {
	e := New()
	s := chain(e, 1)
	for i := range 10 {
		must(t, e.Begin(fmt.Sprint(i), s[0], 0, 1, 1))
	}
	e.TakeDirty(7, func(Record) {})
	for _, q := range e.queue[len(e.queue):cap(e.queue)] {
		if q != nil {
			t.Fatalf("transaction %s still referenced past the queue's end", q.id)
		}
	}
}

// TestReuse: a transaction object reused after End starts clean.
func TestReuse(t *testing.T) {
	e := New()
	s := chain(e, 3)
	v1, v2 := e.Version("v1"), e.Version("v2")
	for i, v := range []VersionID{v1, v2, v1, v2} {
		id := fmt.Sprint("T", i)
		must(t, e.Begin(id, s[1], v, 1, 1))
		mustCall(t, e, id, s[1], 1, s[2], 2, v)
		want := TxnInfo{ID: id, Entry: s[1], Owner: 1, Used: []Use{{s[1], v}, {s[2], v}},
			Running: []SubInfo{{ID: 1, Service: s[1]}, {ID: 2, Service: s[2]}}, Blocks: []ServiceID{s[1], s[2]}}
		if got, _ := e.Txn(id); !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: %+v, want %+v", i, got, want)
		}
		must(t, e.Done(id, 1, s[2]))
		must(t, e.Done(id, 2, s[0]))
		if i%2 == 0 {
			e.TakeDirty(10, func(Record) {})
		}
		must(t, e.End(id))
		e.TakeDirty(10, func(Record) {})
	}
}

func TestTakeDirtyBeforeLeavesYoungChanges(t *testing.T) {
	e := New()
	s := chain(e, 2)
	v1 := e.Version("v1")
	ids := func(before uint64, limit int) []string {
		var out []string
		e.TakeDirtyBefore(before, limit, func(r Record) {
			id := r.Txn
			if r.Deleted {
				id = "-" + id
			}
			out = append(out, id)
		})
		return out
	}
	e.SetEpoch(1)
	must(t, e.Begin("old", s[0], v1, 1, 1))
	e.SetEpoch(2)
	must(t, e.Begin("young", s[0], v1, 1, 1))
	must(t, e.Begin("short", s[0], v1, 1, 1))
	if got := ids(2, 10); !reflect.DeepEqual(got, []string{"old"}) {
		t.Fatalf("TakeDirtyBefore(2) = %v, want only the epoch-1 change", got)
	}
	// A transaction that ends before its epoch is taken is never written.
	must(t, e.End("short"))
	e.SetEpoch(3)
	mustCall(t, e, "old", s[0], 1, s[1], 2, v1) // re-queued in epoch 3
	if got := ids(3, 10); !reflect.DeepEqual(got, []string{"young"}) {
		t.Fatalf("TakeDirtyBefore(3) = %v, want young (short ended unwritten, old re-queued in epoch 3)", got)
	}
	must(t, e.End("young"))
	if got := ids(3, 10); len(got) != 0 {
		t.Fatalf("TakeDirtyBefore(3) = %v: the deletion was queued in epoch 3", got)
	}
	if got := ids(4, 10); !reflect.DeepEqual(got, []string{"old", "-young"}) {
		t.Fatalf("TakeDirtyBefore(4) = %v, want old then the deletion of young", got)
	}
	if e.DirtyLen() != 0 {
		t.Fatalf("DirtyLen = %d after taking everything", e.DirtyLen())
	}
}

func TestAdoptImplicitTransaction(t *testing.T) {
	e := New()
	s := chain(e, 3)
	v1 := e.Version("v1")
	if _, err := e.Call("T", s[1], v1, 5, s[2], 6, v1); err != nil {
		t.Fatal(err)
	}
	if e.Adopt("T", 0) {
		t.Fatal("Adopt with owner 0 succeeded")
	}
	if !e.Adopt("T", 9) || e.Adopt("T", 8) {
		t.Fatal("Adopt: want the first owner set and the second refused")
	}
	if info, _ := e.Txn("T"); info.Owner != 9 {
		t.Fatalf("owner = %d, want 9", info.Owner)
	}
	// Begin replaces the provisional owner with the entry's session.
	must(t, e.Begin("T", s[0], v1, 4, 3))
	if info, _ := e.Txn("T"); info.Owner != 3 || info.Implicit {
		t.Fatalf("after Begin: %+v, want owner 3 and not implicit", info)
	}
	if got := e.EndOwnedBy(9); len(got) != 0 {
		t.Fatalf("EndOwnedBy(provisional owner) ended %v after Begin", got)
	}
	if e.Adopt("nope", 1) {
		t.Fatal("Adopt of an unknown transaction succeeded")
	}
	// Without a Begin, the provisional owner's end ends the transaction.
	if _, err := e.Call("U", s[1], v1, 5, s[2], 6, v1); err != nil {
		t.Fatal(err)
	}
	e.Adopt("U", 9)
	if got := e.EndOwnedBy(9); !reflect.DeepEqual(got, []string{"U"}) {
		t.Fatalf("EndOwnedBy(9) = %v, want [U]", got)
	}
}

// BlockersUsing counts, and AnyBlockerUsing (what an update's progress
// asks after every batch) agrees with it.
func TestBlockersUsing(t *testing.T) {
	e := New()
	s := chain(e, 2)
	v1, v2 := e.Version("v1"), e.Version("v2")
	check := func(when string, v VersionID, want int) {
		t.Helper()
		if got := e.BlockersUsing(s[1], v); got != want {
			t.Fatalf("%s: BlockersUsing(s1, %s) = %d, want %d", when, e.VersionName(v), got, want)
		}
		if got := e.AnyBlockerUsing(s[1], v); got != (want > 0) {
			t.Fatalf("%s: AnyBlockerUsing(s1, %s) = %v, want %v", when, e.VersionName(v), got, want > 0)
		}
	}
	check("no transaction", v1, 0)
	must(t, e.Begin("old", s[0], v1, 1, 1))
	mustCall(t, e, "old", s[0], 1, s[1], 2, v1)
	must(t, e.Return("old", 2)) // used s1@v1, s0 may call it again
	must(t, e.Begin("new", s[0], v1, 1, 1))
	mustCall(t, e, "new", s[0], 1, s[1], 2, v2) // runs on s1@v2
	check("old and new", v1, 1)
	check("old and new", v2, 1)
	must(t, e.Done("old", 1, s[1])) // no future at s1 any more
	check("after the done hint", v1, 0)
	must(t, e.AddLegacy("legacy", 1, nil))
	check("with a legacy transaction", v1, 1)
	check("with a legacy transaction", v2, 2)
}

// A live transaction made legacy blocks every service, keeps what it used,
// gains the uses it is assumed to have made, and ends as usual.
func TestMakeLegacy(t *testing.T) {
	e := New()
	a, b, c := e.Service("a"), e.Service("b"), e.Service("c")
	e.AddEdge(a, b)
	v1, v2 := e.Version("v1"), e.Version("v2")
	must(t, e.Begin("T", a, v1, 1, 1))
	mustCall(t, e, "T", a, 1, b, 2, v1)
	must(t, e.Return("T", 2))
	if !e.Free(c) || e.Free(b) {
		t.Fatalf("before: free(b)=%v free(c)=%v, want false, true", e.Free(b), e.Free(c))
	}
	if e.MakeLegacy("nope", 0, nil) {
		t.Fatal("MakeLegacy of an unknown transaction reported true")
	}
	if !e.MakeLegacy("T", 0, []Use{{b, v2}, {c, v2}}) {
		t.Fatal("MakeLegacy of a live transaction reported false")
	}
	if e.Free(c) || e.BlockerCount(c) != 1 || e.BlockerCount(b) != 1 {
		t.Fatalf("after: free(c)=%v blockers(b)=%d blockers(c)=%d", e.Free(c), e.BlockerCount(b), e.BlockerCount(c))
	}
	if v, ok := e.Used("T", b); !ok || v != v1 {
		t.Errorf("used(T,b) = %v,%v; want the v1 it used, not the assumed v2", v, ok)
	}
	if v, ok := e.Used("T", c); !ok || v != v2 {
		t.Errorf("used(T,c) = %v,%v; want the assumed v2", v, ok)
	}
	if ti, _ := e.Txn("T"); !ti.Legacy {
		t.Error("T not reported legacy")
	}
	mustCall(t, e, "T", a, 1, b, 3, v1) // events still apply
	must(t, e.End("T"))
	if !e.Free(b) || !e.Free(c) || e.Live() != 0 {
		t.Fatalf("after End: free(b)=%v free(c)=%v live=%d", e.Free(b), e.Free(c), e.Live())
	}
}

// TestOwnedCounts: Owned follows every way a transaction gains, changes or
// loses its owner.
func TestOwnedCounts(t *testing.T) {
	e := New()
	a, b := e.Service("a"), e.Service("b")
	v := e.Version("v1")
	must(t, e.Begin("t1", a, v, 1, 7))
	must(t, e.Begin("t2", a, v, 1, 7))
	if _, err := e.Call("t3", a, v, 1, b, 2, v); err != nil { // implicit: no owner
		t.Fatal(err)
	}
	if e.Owned(7) != 2 || e.Owned(8) != 0 {
		t.Fatalf("owned 7=%d 8=%d, want 2 0", e.Owned(7), e.Owned(8))
	}
	e.Adopt("t3", 8)
	if e.Owned(8) != 1 {
		t.Fatalf("owned 8=%d after Adopt, want 1", e.Owned(8))
	}
	must(t, e.Begin("t3", a, v, 1, 7)) // its Begin: the entry's session owns it
	if e.Owned(7) != 3 || e.Owned(8) != 0 {
		t.Fatalf("owned 7=%d 8=%d after Begin, want 3 0", e.Owned(7), e.Owned(8))
	}
	e.MakeLegacy("t1", 8, nil)
	must(t, e.End("t2"))
	if e.Owned(7) != 1 || e.Owned(8) != 1 {
		t.Fatalf("owned 7=%d 8=%d, want 1 1", e.Owned(7), e.Owned(8))
	}
	e.EndOwnedBy(7)
	e.EndOwnedBy(8)
	e.TakeDirty(100, func(Record) {})
	must(t, e.Begin("t4", a, v, 1, 9)) // a recycled txn starts uncounted
	if e.Owned(7) != 0 || e.Owned(8) != 0 || e.Owned(9) != 1 {
		t.Fatalf("owned 7=%d 8=%d 9=%d, want 0 0 1", e.Owned(7), e.Owned(8), e.Owned(9))
	}
}

// TestOnDirty: the WithOnDirty function runs each time DirtyLen leaves 0,
// a deletion included, and not while records are already dirty.
func TestOnDirty(t *testing.T) {
	calls := 0
	e := New(WithOnDirty(func() { calls++ }))
	s := chain(e, 1)
	must(t, e.Begin("A", s[0], 0, 1, 1))
	must(t, e.Begin("B", s[0], 0, 1, 2))
	if calls != 1 || e.DirtyLen() != 2 {
		t.Fatalf("after two Begins: %d calls, DirtyLen %d; want 1 call, 2 dirty", calls, e.DirtyLen())
	}
	e.TakeDirty(10, func(Record) {})
	must(t, e.End("A")) // written: its deletion makes it dirty again
	if calls != 2 || e.DirtyLen() != 1 {
		t.Fatalf("after End of a written transaction: %d calls, DirtyLen %d; want 2 calls, 1 dirty", calls, e.DirtyLen())
	}
	e.TakeDirty(10, func(Record) {})
	must(t, e.Begin("C", s[0], 0, 1, 3))
	must(t, e.End("C")) // never written: dirty again 0, nothing to write
	if calls != 3 || e.DirtyLen() != 0 {
		t.Fatalf("after Begin and End of C: %d calls, DirtyLen %d; want 3 calls, 0 dirty", calls, e.DirtyLen())
	}
}
