package coordinator

import (
	"fmt"
	"testing"

	"github.com/coordinator/coordinator/storage"
)

// A moot pin's deletion never goes in a batch before its transaction's
// record deletion: not while the batch may have left records of its epoch
// behind, not before its epoch is taken; a batch names a key once and holds
// at most max ops.
func TestMootPinsFollowTheirRecords(t *testing.T) {
	keys := func(ops []storage.Op) []string {
		var out []string
		for _, op := range ops {
			out = append(out, op.Key())
		}
		return out
	}
	pin := func(txn string, epoch uint64) mootPin { return mootPin{storage.DeletePin("s", txn), epoch} }
	p := func(txn string) string { return storage.DeletePin("s", txn).Key() }
	c := &orchestrator{}
	for _, mp := range []mootPin{pin("p1", 3), pin("p1", 3), pin("p2", 4), pin("p3", 5), pin("p4", 5)} {
		c.mootPins.push(mp)
	}
	if ops := c.appendMootPinsLocked(nil, 128, 10, false); len(ops) != 0 {
		t.Fatalf("records of the batch's epochs left behind: %v, want no pin", keys(ops))
	}
	if ops := c.appendMootPinsLocked(nil, 128, 3, true); len(ops) != 0 {
		t.Fatalf("records taken before epoch 3: %v, want no pin (the first ended in 3)", keys(ops))
	}
	ops := c.appendMootPinsLocked([]storage.Op{storage.DeleteTxn("record")}, 128, 5, true)
	if got := keys(ops); len(got) != 3 || got[1] != p("p1") || got[2] != p("p2") {
		t.Fatalf("records taken before epoch 5: %v, want record, p1 (once), p2", got)
	}
	ops = c.appendMootPinsLocked(nil, 1, 6, true)
	if got := keys(ops); len(got) != 1 || got[0] != p("p3") || c.mootPins.len() != 1 {
		t.Fatalf("batch of at most 1 op: %v, %d left; want p3, 1 left", got, c.mootPins.len())
	}
}

// The moot-pin queue reuses its array: pins added and taken in turn, as
// events and the write-behind do, allocate nothing once it has grown, and
// a backlog taken whole lets its large array go.
func TestMootQueueReusesItsArray(t *testing.T) {
	var q mootQueue
	mp := mootPin{storage.DeletePin("svc", "T"), 1}
	cycle := func() {
		for range 300 {
			q.push(mp)
		}
		q.dropFront(200) // the write-behind takes part of it
		for range 200 {
			q.push(mp)
		}
		q.dropFront(q.len())
	}
	cycle()
	if n := testing.AllocsPerRun(100, cycle); n != 0 {
		t.Fatalf("a cycle of 500 adds and takes allocated %v times; want 0", n)
	}
	// Order is kept across the move to the front.
	for i := range 6 {
		q.push(mootPin{storage.DeletePin("svc", fmt.Sprint(i)), 1})
	}
	q.dropFront(4)
	for i := 6; i < 10; i++ {
		q.push(mootPin{storage.DeletePin("svc", fmt.Sprint(i)), 1})
	}
	for i := range q.len() {
		if got, want := q.at(i).del.Key(), storage.DeletePin("svc", fmt.Sprint(4+i)).Key(); got != want {
			t.Fatalf("pin %d is %s, want %s", i, got, want)
		}
	}
	q.truncate(2)
	if q.len() != 2 {
		t.Fatalf("after truncate(2): %d waiting", q.len())
	}
	for range 2 * mootKeep {
		q.push(mp)
	}
	q.dropFront(q.len())
	if cap(q.buf) > mootKeep {
		t.Fatalf("an emptied queue kept an array of %d pins; want at most %d", cap(q.buf), mootKeep)
	}
}
