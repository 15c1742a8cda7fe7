package graph

import (
	"slices"
	"testing"
)

// A service a live transaction used, or may still call, stays; once the
// transaction ends it goes, with its edges, and what was reachable only
// through it no longer is.
func TestRemoveServices(t *testing.T) {
	e := New()
	a, s, b := e.Service("a"), e.Service("s"), e.Service("b")
	e.AddEdge(a, s)
	e.AddEdge(s, b)
	v1 := e.Version("v1")
	if err := e.Begin("T", a, v1, 1, 1); err != nil {
		t.Fatal(err)
	}
	// T may call s, and through it b, which stays: s stays.
	if got := e.RemoveServices([]ServiceID{s}); got != nil {
		t.Fatalf("RemoveServices(s) while T may call s and b through it = %v, want none", got)
	}
	if _, err := e.Call("T", a, v1, 1, s, 2, v1); err != nil {
		t.Fatal(err)
	}
	if err := e.Return("T", 2); err != nil {
		t.Fatal(err)
	}
	if err := e.Done("T", 1, s); err != nil {
		t.Fatal(err)
	}
	// T used s: it stays. b: T will not call s again, so not b either.
	if got := e.RemoveServices([]ServiceID{s}); got != nil {
		t.Fatalf("RemoveServices(s) while T used it = %v", got)
	}
	if err := e.End("T"); err != nil {
		t.Fatal(err)
	}
	if got := e.RemoveServices([]ServiceID{s, 99}); !slices.Equal(got, []ServiceID{s}) {
		t.Fatalf("RemoveServices(s) after T ended = %v, want [s]", got)
	}
	if e.NumServices() != 2 || e.ServiceName(s) != "" || e.HasEdge(a, s) || e.Free(s) != true {
		t.Fatalf("after removal: %d services, name %q, edge a->s %v", e.NumServices(), e.ServiceName(s), e.HasEdge(a, s))
	}
	if err := e.Begin("U", a, v1, 1, 1); err != nil {
		t.Fatal(err)
	}
	if e.HasFuture("U", b) {
		t.Fatal("b is in U's future, though only the removed s led there")
	}
	if _, err := e.Call("U", a, v1, 1, s, 2, v1); err != ErrInvalid {
		t.Fatalf("Call to the removed id = %v, want ErrInvalid", err)
	}
	// The id is given to the next service, clean.
	if x := e.Service("x"); x != s || e.ServiceName(x) != "x" || len(e.Successors(x)) != 0 || e.HasFuture("U", x) {
		t.Fatalf("new service x got id %d (removed %d), successors %v", x, s, e.Successors(x))
	}
	if e.AddEdge(a, s) != true || !e.HasFuture("U", s) {
		t.Fatal("a new edge to the reused id is not in U's future")
	}
}

// A service a live transaction may call but that leads nowhere (a name
// called over a learned edge) goes: no block set changes. Called again,
// its edge is learned again.
func TestRemoveServicesSinkInFuture(t *testing.T) {
	e := New()
	a, g, b := e.Service("a"), e.Service("g"), e.Service("b")
	e.AddEdge(a, g)
	e.AddEdge(a, b)
	v1 := e.Version("v1")
	if err := e.Begin("T", a, v1, 1, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Call("T", a, v1, 1, b, 2, v1); err != nil {
		t.Fatal(err)
	}
	if err := e.Return("T", 2); err != nil {
		t.Fatal(err)
	}
	before, _ := e.Txn("T")
	if got := e.RemoveServices([]ServiceID{g, b}); !slices.Equal(got, []ServiceID{g}) {
		t.Fatalf("RemoveServices(g, b) = %v, want [g] (b is used)", got)
	}
	after, _ := e.Txn("T")
	if !slices.Equal(before.Blocks, after.Blocks) || !e.HasFuture("T", b) || e.Free(b) {
		t.Fatalf("T's block set %v became %v", before.Blocks, after.Blocks)
	}
	g2 := e.Service("g2")
	info, err := e.Call("T", a, v1, 1, g2, 3, v1)
	if err != nil || !info.LearnedEdge {
		t.Fatalf("Call to the new g2 = %+v %v, want a learned edge", info, err)
	}
}

// A Done hint naming a removed service does not apply to the service that
// gets its id next.
func TestRemoveServicesDropsHints(t *testing.T) {
	e := New()
	a, s, c := e.Service("a"), e.Service("s"), e.Service("c")
	e.AddEdge(a, s)
	e.AddEdge(a, c)
	v1 := e.Version("v1")
	if err := e.Begin("T", a, v1, 1, 1); err != nil {
		t.Fatal(err)
	}
	if err := e.Done("T", 1, s); err != nil { // applied
		t.Fatal(err)
	}
	if err := e.Done("T", 7, s); err != nil { // waits for sub 7
		t.Fatal(err)
	}
	if err := e.Done("O", 3, s); err != nil { // waits for transaction O
		t.Fatal(err)
	}
	if got := e.RemoveServices([]ServiceID{s}); !slices.Equal(got, []ServiceID{s}) {
		t.Fatalf("RemoveServices(s) = %v, want [s]", got)
	}
	x := e.Service("x")
	if x != s {
		t.Fatalf("x got id %d, want the removed %d", x, s)
	}
	e.AddEdge(a, x)
	if !e.HasFuture("T", x) {
		t.Fatal("the hint about the removed s applies to x, which took its id")
	}
	if _, err := e.Call("T", a, v1, 1, c, 7, v1); err != nil {
		t.Fatal(err)
	}
	e.AddEdge(c, x)
	if err := e.Begin("O", a, v1, 3, 1); err != nil {
		t.Fatal(err)
	}
	if info, _ := e.Txn("T"); len(info.Running) != 2 || len(info.Running[1].Done) != 0 {
		t.Fatalf("T's sub 7 got hints %v, want none", info.Running)
	}
	if info, _ := e.Txn("O"); len(info.Running[0].Done) != 0 || !e.HasFuture("O", x) {
		t.Fatalf("O's root got hints %v, want none", info.Running[0].Done)
	}
}

// A version is removed only when no live transaction used it; its id is
// reused.
func TestRemoveVersion(t *testing.T) {
	e := New()
	a := e.Service("a")
	v1, v2 := e.Version("v1"), e.Version("v2")
	if err := e.Begin("T", a, v1, 1, 1); err != nil {
		t.Fatal(err)
	}
	if e.RemoveVersion(v1) || e.VersionUsers(v1) != 1 || e.RemoveVersion(0) {
		t.Fatal("removed a version in use, or the empty one")
	}
	if !e.RemoveVersion(v2) || e.VersionName(v2) != "" || e.RemoveVersion(v2) {
		t.Fatal("v2, unused, not removed exactly once")
	}
	if err := e.Begin("U", a, v2, 1, 1); err != ErrInvalid {
		t.Fatalf("Begin at the removed version = %v, want ErrInvalid", err)
	}
	if err := e.End("T"); err != nil {
		t.Fatal(err)
	}
	if !e.RemoveVersion(v1) {
		t.Fatal("v1 not removed after its last user ended")
	}
	if v3 := e.Version("v3"); v3 != v1 && v3 != v2 || e.VersionName(v3) != "v3" {
		t.Fatalf("v3 = %d, want a reused id", v3)
	}
}
