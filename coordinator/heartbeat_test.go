package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
)

// A registered session's heartbeat is answered by its stream's receiver,
// not queued behind the stream's events: while the stream's handler waits
// for the event lock with a batch, the heartbeat sent after that batch is
// answered (and the batch is not acknowledged until the lock is free).
func TestHeartbeatIsAnsweredWhileItsStreamWaitsForTheEventLock(t *testing.T) {
	ts := servertest.Start(t, "")
	a := ts.Sidecar("a-1", "a", "v1")
	// Its acknowledgement of its routing snapshot first: the handler takes
	// the event lock to apply it, and a handler waiting for the lock with
	// that ack would hold the batch back in the receiver.
	servertest.Eventually(t, 10*time.Second, "a to acknowledge its routing", func() bool {
		return ts.Leader().RoutingSettled("a-1")
	})
	var acked <-chan bool
	ts.Leader().UnderEventLock(func() {
		w, err := a.SendAsync(simsidecar.Begin("t1", 1))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ack, err := a.Heartbeat(ctx)
		if err != nil {
			t.Fatalf("heartbeat not answered within 5s while its stream's batch waits for the event lock: %v", err)
		}
		if ack.GetError() != "" || ack.GetTtl().AsDuration() <= 0 && !ack.GetPending() {
			t.Fatalf("heartbeat answer %v, want the lease's TTL", ack)
		}
		select {
		case <-w:
			t.Fatal("batch acknowledged while the event lock was held")
		default:
		}
		done := make(chan bool, 1)
		go func() { a, ok := <-w; done <- ok && len(a.GetErrors()) == 0 }()
		acked = done
	})
	select {
	case ok := <-acked:
		if !ok {
			t.Fatal("batch failed once the lock was free")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("batch not acknowledged within 10s of the event lock's release")
	}
}
