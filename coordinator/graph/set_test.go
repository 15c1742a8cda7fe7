package graph

import "testing"

// modelSetBlockers are the transactions of m that block set, by the
// model's past and future (DESIGN.md §4.8): they used a service of the set
// and may still call one (or run at one).
func modelSetBlockers(m *model, n int, set []ServiceID) map[string]bool {
	out := map[string]bool{}
	for id, mt := range m.txns {
		future, past := mt.edges(n)
		p, f := false, false
		for _, s := range set {
			p = p || past[s]
			f = f || future[s]
		}
		if p && f {
			out[id] = true
		}
	}
	return out
}

// testSets are the sets checkSets checks on n services: every pair of
// neighbours, and the first, middle and last together.
func testSets(n int) [][]ServiceID {
	var sets [][]ServiceID
	for s := range n {
		sets = append(sets, []ServiceID{ServiceID(s), ServiceID((s + 1) % n)})
	}
	return append(sets, []ServiceID{0, ServiceID(n / 2), ServiceID(n - 1)})
}

// checkSets checks the set queries against the model (TestModel calls it
// after every step): on acyclic graphs the blockers are the model's; on
// cyclic ones (where the engine's future is within the model's) a subset.
// A set of one answers as the service's own queries.
func checkSets(e *Engine, m *model, n int, cyclic bool, fail func(string, ...any)) {
	for s := range n {
		one := []ServiceID{ServiceID(s)}
		if e.FreeSet(one) != e.Free(ServiceID(s)) || e.SetBlockerCount(one) != e.BlockerCount(ServiceID(s)) {
			fail("set {s%d}: FreeSet %v SetBlockerCount %d, Free %v BlockerCount %d", s,
				e.FreeSet(one), e.SetBlockerCount(one), e.Free(ServiceID(s)), e.BlockerCount(ServiceID(s)))
		}
	}
	for _, set := range testSets(n) {
		want := modelSetBlockers(m, n, set)
		got := e.SetBlockerCount(set)
		if (!cyclic && got != len(want)) || got > len(want) {
			fail("set %v: SetBlockerCount %d, model %d (%v)", set, got, len(want), want)
		}
		if e.FreeSet(set) != (got == 0) {
			fail("set %v: FreeSet %v with %d blockers", set, e.FreeSet(set), got)
		}
		for _, v := range []VersionID{1, 2} {
			uses := make([]Use, len(set))
			for i, s := range set {
				uses[i] = Use{s, v}
			}
			n := 0
			for id := range want {
				for _, s := range set {
					if m.txns[id].used[s] == v {
						n++
						break
					}
				}
			}
			got := e.SetBlockersUsing(uses)
			if (!cyclic && got != n) || got > n || e.AnySetBlockerUsing(uses) != (got > 0) {
				fail("set %v at v%d: SetBlockersUsing %d (any %v), model %d", set, v, got, e.AnySetBlockerUsing(uses), n)
			}
		}
	}
}

// TestSetUsedOneMayCallAnother is the case set freeness exists for: a
// transaction used portal (and will not call it again) and may still call
// proc. Each service alone is free; the set is not, until the transaction
// says it is done with proc.
func TestSetUsedOneMayCallAnother(t *testing.T) {
	e := New()
	gw, portal, proc := e.Service("gateway"), e.Service("portal"), e.Service("proc")
	e.AddEdge(gw, portal)
	e.AddEdge(gw, proc)
	v1 := e.Version("v1")
	set := []ServiceID{portal, proc}

	must(t, e.Begin("T", gw, v1, 1, 1))
	mustCall(t, e, "T", gw, 1, portal, 2, v1)
	if e.FreeSet(set) || e.SetBlockerCount(set) != 1 {
		t.Fatalf("T runs at portal: set free %v, %d blockers", e.FreeSet(set), e.SetBlockerCount(set))
	}
	must(t, e.Return("T", 2))
	must(t, e.Done("T", 1, portal))
	if !e.Free(portal) || !e.Free(proc) {
		t.Fatalf("portal free %v, proc free %v: each alone should be", e.Free(portal), e.Free(proc))
	}
	if e.FreeSet(set) || e.SetBlockerCount(set) != 1 {
		t.Fatalf("T used portal and may call proc: set free %v, %d blockers", e.FreeSet(set), e.SetBlockerCount(set))
	}
	if !e.AnySetBlockerUsing([]Use{{portal, v1}, {proc, v1}}) || e.SetBlockersUsing([]Use{{portal, e.Version("v2")}, {proc, e.Version("v2")}}) != 0 {
		t.Fatal("T uses the old side of the set, not the new")
	}
	if u, ok := e.SetSide("T", set); !ok || u != (Use{portal, v1}) {
		t.Fatalf("SetSide = %v, %v; want portal@v1", u, ok)
	}
	must(t, e.Done("T", 1, proc))
	if !e.FreeSet(set) || e.SetBlockerCount(set) != 0 {
		t.Fatalf("T done with proc: set free %v, %d blockers", e.FreeSet(set), e.SetBlockerCount(set))
	}
	// A legacy transaction blocks every set.
	must(t, e.AddLegacy("L", 1, nil))
	if e.FreeSet(set) || e.SetBlockerCount(set) != 1 {
		t.Fatalf("legacy: set free %v, %d blockers", e.FreeSet(set), e.SetBlockerCount(set))
	}
}
