package graph

import (
	"errors"
	"testing"
)

// A Done counts only from the service its sub-transaction runs at. Sent by
// another service about a running sub it fails with ErrNotOwner; sent
// before the sub starts, it is kept and dropped when the sub starts
// elsewhere. Either way the future it would have removed stays. The sub's
// own service may still give it.
func TestDoneByChecksTheSender(t *testing.T) {
	e := New()
	portal, auth, proc, _ := seedGraph(e)
	v1 := e.Version("v1")
	must(t, e.Begin("T", portal, v1, 1, 1))
	mustCall(t, e, "T", portal, 1, proc, 2, v1) // sub 2 runs at proc, may call auth

	if err := e.DoneBy("T", 2, auth, portal); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("Done about proc's sub sent by portal = %v, want ErrNotOwner", err)
	}
	if !e.HasFuture("T", auth) {
		t.Fatal("a refused Done removed proc's future call of auth")
	}

	// Before its Call: sub 3 will run at auth; a Done sent by proc about it
	// waits, then is refused when the Call shows where sub 3 runs.
	must(t, e.DoneBy("T", 3, auth, proc))
	before := e.ReorderStats()
	mustCall(t, e, "T", portal, 1, auth, 3, v1)
	if st := e.ReorderStats(); st.EarlyDoneRefused != before.EarlyDoneRefused+1 || st.EarlyDoneApplied != before.EarlyDoneApplied {
		t.Fatalf("reorder stats %+v after the Call, want one more refused and none applied (before %+v)", st, before)
	}

	must(t, e.DoneBy("T", 2, auth, proc)) // from proc itself: applies
	if hs := e.txns["T"].hints; len(hs) != 1 || hs[0] != (hint{sub: 2, to: auth}) {
		t.Fatalf("hints %+v, want proc's sub 2 done with auth alone", hs)
	}
}

// SubCaller names the service whose Call started a sub-transaction: the
// one whose Return may end it.
func TestSubCaller(t *testing.T) {
	e := New()
	portal, auth, proc, _ := seedGraph(e)
	v1 := e.Version("v1")
	must(t, e.Begin("T", portal, v1, 1, 1))
	if _, ok := e.SubCaller("T", 1); ok {
		t.Fatal("a root has a caller")
	}
	mustCall(t, e, "T", portal, 1, proc, 2, v1)
	// Proc's nested call arrives before anything else names sub 4's caller.
	mustCall(t, e, "T", proc, 2, auth, 3, v1)
	if from, ok := e.SubCaller("T", 2); !ok || from != portal {
		t.Fatalf("caller of sub 2 = %v %v, want portal", from, ok)
	}
	if from, ok := e.SubCaller("T", 3); !ok || from != proc {
		t.Fatalf("caller of sub 3 = %v %v, want proc", from, ok)
	}
	// A sub known only as the caller of a Call (its own Call not seen yet)
	// has no known caller until its Call comes.
	mustCall(t, e, "U", proc, 7, auth, 8, v1)
	if _, ok := e.SubCaller("U", 7); ok {
		t.Fatal("sub 7's caller known before its Call")
	}
	must(t, e.Begin("U", portal, v1, 6, 1))
	mustCall(t, e, "U", portal, 6, proc, 7, v1)
	if from, ok := e.SubCaller("U", 7); !ok || from != portal {
		t.Fatalf("caller of sub 7 after its Call = %v %v, want portal", from, ok)
	}
	must(t, e.Return("T", 2))
	if _, ok := e.SubCaller("T", 2); ok {
		t.Fatal("a returned sub still has a caller")
	}
}

// Implicit follows a transaction from its first Call (implicit) through
// its Begin (not any more) to its End (not live).
func TestImplicitFollowsTheTransaction(t *testing.T) {
	e := New()
	s := chain(e, 3)
	a, b, c := s[0], s[1], s[2]
	v1 := e.Version("v1")
	check := func(when string, wantImplicit, wantLive bool) {
		t.Helper()
		if implicit, live := e.Implicit("T"); implicit != wantImplicit || live != wantLive {
			t.Fatalf("%s: Implicit = %v, %v; want %v, %v", when, implicit, live, wantImplicit, wantLive)
		}
	}
	check("unknown", false, false)
	mustCall(t, e, "T", b, 2, c, 3, v1)
	check("after a Call", true, true)
	must(t, e.Begin("T", a, v1, 1, 1))
	check("after its Begin", false, true)
	must(t, e.End("T"))
	check("after its End", false, false)
}
