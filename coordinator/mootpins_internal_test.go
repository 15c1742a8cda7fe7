package coordinator

import (
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
	c := &orchestrator{mootPins: []mootPin{pin("p1", 3), pin("p1", 3), pin("p2", 4), pin("p3", 5), pin("p4", 5)}}
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
	if got := keys(ops); len(got) != 1 || got[0] != p("p3") || len(c.mootPins) != 1 {
		t.Fatalf("batch of at most 1 op: %v, %d left; want p3, 1 left", got, len(c.mootPins))
	}
}
