package graph

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
)

// seedGraph interns Portal→Auth, Portal→Proc, Proc→Auth, Proc→DB (DESIGN.md
// §1).
func seedGraph(e *Engine) (portal, auth, proc, db ServiceID) {
	portal, auth, proc, db = e.Service("portal"), e.Service("auth"), e.Service("proc"), e.Service("db")
	e.AddEdge(portal, auth)
	e.AddEdge(portal, proc)
	e.AddEdge(proc, auth)
	e.AddEdge(proc, db)
	return
}

// TestReturnBeforeNestedCall: Portal's sidecar sends Call(T2 at Proc) and,
// once Proc answered, Return(T2) and "done with Proc"; Proc's sidecar sends
// Proc's own Call(T3 at Auth) and Return(T3). When Portal's stream is
// applied first, Proc's Call names a caller that has returned: it must not
// start it again, or Proc (and Auth, DB behind it) would stay blocked until
// T ends although every event has arrived.
func TestReturnBeforeNestedCall(t *testing.T) {
	e := New()
	portal, auth, proc, db := seedGraph(e)
	v1 := e.Version("v1")
	must(t, e.Begin("T", portal, v1, 1, 1))
	mustCall(t, e, "T", portal, 1, auth, 2, v1)
	must(t, e.Return("T", 2))
	must(t, e.Done("T", 1, auth))
	// Portal's stream.
	mustCall(t, e, "T", portal, 1, proc, 3, v1)
	must(t, e.Return("T", 3))
	must(t, e.Done("T", 1, proc))
	// Proc's stream, late.
	mustCall(t, e, "T", proc, 3, auth, 4, v1)
	if _, _, ok := e.SubAt("T", 3); ok {
		t.Fatal("the late Call started its returned caller again")
	}
	must(t, e.Return("T", 4))
	for _, s := range []ServiceID{auth, proc, db} {
		if !e.Free(s) || e.BlockerCount(s) != 0 {
			t.Errorf("%s not free after every event arrived: %+v", e.ServiceName(s), e.Blockers(s, 10))
		}
	}
	if ti, _ := e.Txn("T"); len(ti.Running) != 1 || ti.Running[0].ID != 1 {
		t.Errorf("running %+v, want the root alone", ti.Running)
	}
	if e.Free(portal) {
		t.Error("portal free while T runs there")
	}
}

// TestLateEventsOfReturnedSub: events about a sub-transaction whose Return
// was applied change nothing and say so.
func TestLateEventsOfReturnedSub(t *testing.T) {
	e := New()
	portal, auth, proc, _ := seedGraph(e)
	v1 := e.Version("v1")
	must(t, e.Begin("T", portal, v1, 1, 1))
	mustCall(t, e, "T", portal, 1, proc, 2, v1)
	mustCall(t, e, "T", proc, 2, auth, 3, v1)
	must(t, e.Return("T", 3))
	before := snapshot(e)
	for name, ev := range map[string]func() error{
		"Done":            func() error { return e.Done("T", 3, auth) }, // Auth's hint, after Proc's Return
		"Return again":    func() error { return e.Return("T", 3) },
		"Call of the sub": func() error { _, err := e.Call("T", proc, v1, 2, auth, 3, v1); return err },
	} {
		if err := ev(); !errors.Is(err, ErrSubReturned) {
			t.Errorf("%s of a returned sub: %v, want ErrSubReturned", name, err)
		}
	}
	if after := snapshot(e); !reflect.DeepEqual(before, after) {
		t.Errorf("late events changed the state:\n%+v\n%+v", before, after)
	}
}

// TestDoneBeforeCall: Proc's "done with Auth" is sent by Proc's sidecar; the
// Call that started Proc's sub by Portal's. A hint that arrives first waits
// for its sub, then applies: seed moment D is reached whatever the order.
func TestDoneBeforeCall(t *testing.T) {
	run := func(t *testing.T, hintFirst bool) {
		e := New()
		portal, auth, proc, db := seedGraph(e)
		v1 := e.Version("v1")
		done := func() { must(t, e.Done("T", 3, auth)) } // Proc's stream
		if hintFirst {
			done() // before anything of T
		}
		must(t, e.Begin("T", portal, v1, 1, 1))
		mustCall(t, e, "T", portal, 1, auth, 2, v1)
		must(t, e.Return("T", 2))
		must(t, e.Done("T", 1, auth))
		if !hintFirst {
			done() // T is known, sub 3 is not
		}
		if ti, _ := e.Txn("T"); len(ti.Running) != 1 {
			t.Fatalf("a hint started its sub: %+v", ti.Running)
		}
		if e.Free(auth) {
			t.Fatal("auth free while Portal may still call Proc, which may call auth") // moment C
		}
		mustCall(t, e, "T", portal, 1, proc, 3, v1)
		must(t, e.Done("T", 1, proc)) // Portal's stream
		mustCall(t, e, "T", proc, 3, db, 4, v1)
		if ti, _ := e.Txn("T"); !reflect.DeepEqual(ti.Running[1], SubInfo{ID: 3, Service: proc, Done: []ServiceID{auth}}) {
			t.Fatalf("Proc's sub %+v, want done with auth", ti.Running[1])
		}
		if !e.Free(auth) || e.Free(db) {
			t.Errorf("free(auth) %v free(db) %v, want true false (moment D)", e.Free(auth), e.Free(db))
		}
		if st := e.ReorderStats(); st != (ReorderStats{EarlyDone: 1, EarlyDoneApplied: 1}) {
			t.Errorf("stats %+v", st)
		}
	}
	t.Run("txn known", func(t *testing.T) { run(t, false) })
	t.Run("txn not seen yet", func(t *testing.T) { run(t, true) })

	// The sub may first be seen through its own nested Call (same stream as
	// the hint); a Call it said it would not make breaks the hint.
	t.Run("nested call", func(t *testing.T) {
		e := New()
		portal, auth, proc, db := seedGraph(e)
		must(t, e.Begin("T", portal, 0, 1, 1))
		must(t, e.Done("T", 3, auth))
		must(t, e.Done("T", 3, db))
		mustCall(t, e, "T", proc, 3, db, 4, 0)
		ti, _ := e.Txn("T")
		if len(ti.Running) != 3 || !reflect.DeepEqual(ti.Running[2].Done, []ServiceID{auth}) {
			t.Fatalf("running %+v, want sub 3 at proc done with auth only", ti.Running)
		}
	})
}

// TestEarlyDoneBounded: the hints waiting for their sub are bounded per
// transaction and go with it.
func TestEarlyDoneBounded(t *testing.T) {
	e := New()
	portal, auth, _, _ := seedGraph(e)
	must(t, e.Begin("T", portal, 0, 1, 1))
	for i := range maxEarly {
		must(t, e.Done("T", SubID(100+i), auth))
	}
	must(t, e.Done("T", 100, auth)) // the same hint again
	if err := e.Done("T", 999, auth); !errors.Is(err, ErrEarlyLimit) {
		t.Fatalf("hint over the limit: %v", err)
	}
	for i := range maxEarly {
		must(t, e.Done("U", SubID(100+i), auth)) // U not seen yet
	}
	if err := e.Done("U", 999, auth); !errors.Is(err, ErrEarlyLimit) {
		t.Fatalf("hint over the limit of a transaction not seen yet: %v", err)
	}
	mustCall(t, e, "T", portal, 1, auth, 100, 0)
	must(t, e.End("T"))
	if st := e.ReorderStats(); st != (ReorderStats{EarlyDone: 2 * maxEarly, EarlyDoneApplied: 1, EarlyDoneDropped: maxEarly - 1}) {
		t.Errorf("stats %+v", st)
	}
	if n := len(e.spareOrQueued("T").early); n != 0 {
		t.Errorf("ended T keeps %d hints", n)
	}
	// Hints of transactions never seen are forgotten, oldest first.
	for i := range 2 * maxOrphans {
		must(t, e.Done(fmt.Sprint("never", i), 2, auth))
	}
	if n := len(e.orphans) + len(e.oldOrphans); n > 2*maxOrphans {
		t.Errorf("%d transactions not seen yet keep hints", n)
	}
	if _, ok := e.oldOrphans["U"]; ok {
		t.Error("the oldest hints were kept")
	}
	if _, ok := e.orphans[fmt.Sprint("never", 2*maxOrphans-1)]; !ok {
		t.Error("the newest hints were forgotten")
	}
}

// spareOrQueued finds the record of an ended transaction still queued for
// the write-behind or kept for reuse.
func (e *Engine) spareOrQueued(id string) *txn {
	for _, t := range e.queue[e.qhead:] {
		if t != nil && t.id == id {
			return t
		}
	}
	return &txn{}
}

// TestReturnedBounded: past maxReturned the oldest returned ids are
// forgotten: a very late Call may then start one again, which is pessimistic
// but sound.
func TestReturnedBounded(t *testing.T) {
	e := New()
	portal, auth, proc, _ := seedGraph(e)
	must(t, e.Begin("T", portal, 0, 1, 1))
	for i := range maxReturned + 1 {
		mustCall(t, e, "T", portal, 1, proc, SubID(10+i), 0)
		must(t, e.Return("T", SubID(10+i)))
	}
	tx := e.txns["T"]
	if len(tx.returned) > maxReturned || len(tx.returned) < maxReturned/2 {
		t.Fatalf("%d returned ids kept", len(tx.returned))
	}
	if err := e.Return("T", SubID(10+maxReturned)); !errors.Is(err, ErrSubReturned) {
		t.Errorf("newest returned id forgotten: %v", err)
	}
	mustCall(t, e, "T", proc, 10, auth, 5000, 0) // the oldest, forgotten
	if _, _, ok := e.SubAt("T", 10); !ok {
		t.Error("a forgotten returned id was not started pessimistically")
	}
}
