package graph

import (
	"errors"
	"reflect"
	"testing"
)

func TestMakeLegacyOwnedBy(t *testing.T) {
	e := New()
	s := chain(e, 3)
	a, b, c := s[0], s[1], s[2]
	v1 := e.Version("v1")
	must(t, e.Begin("T", a, v1, 1, 1))
	mustCall(t, e, "T", a, 1, b, 2, v1)
	must(t, e.Begin("U", c, v1, 1, 2)) // another owner's
	e.TakeDirty(e.DirtyLen(), func(Record) {})
	if bs := e.Blockers(c, 10); len(bs) != 1 || bs[0].Txn != "U" {
		t.Fatalf("blockers of c before = %+v, want U only", bs)
	}
	if n := e.MakeLegacyOwnedBy(1); n != 1 {
		t.Fatalf("MakeLegacyOwnedBy(1) = %d, want 1", n)
	}
	for _, svc := range []ServiceID{a, b, c} {
		if e.Free(svc) {
			t.Errorf("service %d free with a legacy transaction", svc)
		}
	}
	ti, _ := e.Txn("T")
	if !ti.Legacy || ti.Owner != 1 {
		t.Errorf("T = %+v, want legacy, owner 1", ti)
	}
	if ui, _ := e.Txn("U"); ui.Legacy {
		t.Error("another owner's transaction made legacy")
	}
	if bs := e.Blockers(c, 10); len(bs) != 2 {
		t.Errorf("blockers of c = %+v, want T (legacy) and U", bs)
	}
	var recs []Record
	e.TakeDirty(e.DirtyLen(), func(r Record) { recs = append(recs, r) })
	if len(recs) != 1 || recs[0].Txn != "T" || !recs[0].Legacy {
		t.Errorf("records after MakeLegacyOwnedBy = %+v, want T's, legacy", recs)
	}
	// Again: nothing changes but the record is queued again.
	if n := e.MakeLegacyOwnedBy(1); n != 1 || e.DirtyLen() != 1 {
		t.Errorf("second MakeLegacyOwnedBy: %d, dirty %d; want 1, 1", n, e.DirtyLen())
	}
	e.EndOwnedBy(1)
	if !e.Free(a) || !e.Free(b) || e.Free(c) {
		t.Error("after End: a and b should be free, c blocked by U")
	}
	if bs := e.Blockers(c, 10); len(bs) != 1 || !reflect.DeepEqual(bs[0], Blocker{Txn: "U", Running: true, PastVersion: v1, FutureVia: c, FutureViaOK: true}) {
		t.Errorf("blockers of c after End = %+v", bs)
	}
}

// A Return about a sub-transaction a legacy transaction ran before this
// engine (a failover) is ErrLegacySub and changes nothing; a sub-transaction
// it starts after is returned as usual; End ends it.
func TestReturnOfALegacySubStartedBefore(t *testing.T) {
	e := New()
	s := chain(e, 2)
	a, b := s[0], s[1]
	v1 := e.Version("v1")
	if err := e.AddLegacy("T", 1, []Use{{Service: a, Version: v1}}); err != nil {
		t.Fatal(err)
	}
	if err := e.Return("T", 7); !errors.Is(err, ErrLegacySub) {
		t.Fatalf("Return of a sub T ran before = %v, want ErrLegacySub", err)
	}
	if err := e.Return("U", 7); !errors.Is(err, ErrUnknownTxn) {
		t.Fatalf("Return in an unknown transaction = %v, want ErrUnknownTxn", err)
	}
	if e.Free(b) {
		t.Fatal("b free with legacy T live")
	}
	mustCall(t, e, "T", a, 1, b, 8, v1)
	must(t, e.Return("T", 8))
	if err := e.Return("T", 8); !errors.Is(err, ErrSubReturned) {
		t.Fatalf("second Return of T's sub 8 = %v, want ErrSubReturned", err)
	}
	must(t, e.End("T"))
	if !e.Free(a) || !e.Free(b) {
		t.Fatal("a or b not free after legacy T ended")
	}
}
