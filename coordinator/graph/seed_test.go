package graph

import "testing"

// TestSeedScenario replays DESIGN.md §1: Portal→Auth (T1), Portal→Proc (T2),
// Proc→Auth (T3), Proc→DB (T4) inside T0, and checks free(Auth) at the
// moments A to D, without and with the hints.
func TestSeedScenario(t *testing.T) {
	for _, hints := range []bool{false, true} {
		e := New()
		portal, auth, proc, db := e.Service("portal"), e.Service("auth"), e.Service("proc"), e.Service("db")
		e.AddEdge(portal, auth)
		e.AddEdge(portal, proc)
		e.AddEdge(proc, auth)
		e.AddEdge(proc, db)
		v1 := e.Version("v1")
		moment := func(name string, want bool) {
			t.Helper()
			if got := e.Free(auth); got != want {
				t.Errorf("hints=%v moment %s: free(auth) = %v, want %v", hints, name, got, want)
			}
		}
		call := func(from ServiceID, caller SubID, to ServiceID, sub SubID) {
			t.Helper()
			if _, err := e.Call("T0", from, v1, caller, to, sub, v1); err != nil {
				t.Fatal(err)
			}
		}
		ok := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}

		ok(e.Begin("T0", portal, v1, 1, 1))
		moment("A", true)
		call(portal, 1, auth, 2) // T1
		moment("B", false)
		ok(e.Return("T0", 2))
		if hints {
			ok(e.Done("T0", 1, auth))
		}
		// Proc may still call Auth.
		moment("C", false)
		call(portal, 1, proc, 3) // T2
		if hints {
			ok(e.Done("T0", 1, proc))
		}
		call(proc, 3, auth, 4) // T3
		ok(e.Return("T0", 4))
		if hints {
			ok(e.Done("T0", 3, auth))
		}
		moment("D", hints)
		call(proc, 3, db, 5) // T4
		ok(e.Return("T0", 5))
		moment("D after T4", hints)
		ok(e.Return("T0", 3))
		moment("T2 returned", hints)
		ok(e.End("T0"))
		moment("T0 ended", true)
	}
}
