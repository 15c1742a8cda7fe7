package coordinator_test

import (
	"context"
	"testing"

	"github.com/coordinator/coordinator/internal/simsidecar"
)

// Each event batch is observed once in the event lock histograms (the
// time its stream waited for the lock, and held it), whatever it holds:
// operators and bench/ingest read them to tell a stall of the event path
// from a wait elsewhere.
func TestBatchLockHistograms(t *testing.T) {
	ts := startMem(t) // event application only: no durability claimed
	ctx := context.Background()
	a := ts.Sidecar("a-1", "a", "v1", "b")
	wait0 := ts.Metric("coordinator_batch_lock_wait_seconds_count")
	held0 := ts.Metric("coordinator_batch_lock_held_seconds_count")
	for _, txn := range []string{"x", "y", "z"} {
		if _, err := a.Send(ctx, simsidecar.Begin(txn, 1), simsidecar.Call(txn, 1, "b", 2)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Send(ctx, simsidecar.End("nope")); err != nil { // rejected or late: still a batch
		t.Fatal(err)
	}
	if got := ts.Metric("coordinator_batch_lock_wait_seconds_count") - wait0; got != 4 {
		t.Errorf("batch_lock_wait_seconds observed %v batches, want 4", got)
	}
	if got := ts.Metric("coordinator_batch_lock_held_seconds_count") - held0; got != 4 {
		t.Errorf("batch_lock_held_seconds observed %v batches, want 4", got)
	}
}
