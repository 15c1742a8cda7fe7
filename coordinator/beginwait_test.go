package coordinator_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// A call held for a BEGIN that never comes (its transaction was joined,
// not begun, by the caller) is held for BeginWaitTimeout (2 s by default),
// not for ImplicitTimeout (30 s): then it is decided as for a transaction
// not seen begin, and the wait is counted as a timeout. One whose BEGIN
// comes is counted as begun.
func TestCallWaitsForItsBeginAtMostBeginWaitTimeout(t *testing.T) {
	ts := startMem(t) // event application and update decisions: no durability claimed
	x := longLived(ts, "x-1", "x", "v1", "d")
	longLived(ts, "d-1", "d", "v1")
	longLived(ts, "d-2", "d", "v2")
	servertest.Send(t, x, simsidecar.Begin("T0", 1), simsidecar.Call("T0", 1, "d", 2), simsidecar.Return("T0", 2))
	switchCV(t, ts, "d")

	start := time.Now()
	dec, _, err := x.SendWait(simsidecar.Call("orphan", 2, "d", 3))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-dec:
		waited := time.Since(start)
		t.Logf("held %v for a BEGIN that never came", waited)
		if waited < coordinator.DefaultBeginWaitTimeout-100*time.Millisecond || waited > coordinator.DefaultBeginWaitTimeout+2*time.Second {
			t.Fatalf("decided after %v, want about %v", waited, coordinator.DefaultBeginWaitTimeout)
		}
		if m.GetVersion() != "v1" || m.GetError() != "" {
			t.Fatalf("decision %v, want v1 (a transaction not seen begin)", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the call is still held 10 s later")
	}
	if n := ts.Metric(`coordinator_begin_wait_seconds_count{outcome="timeout"}`); n != 1 {
		t.Fatalf("begin wait timeouts = %v, want 1", n)
	}

	// A call whose BEGIN comes is released by it, and counted as begun.
	a := longLived(ts, "a-1", "a", "v1", "x")
	dec, _, err = x.SendWait(simsidecar.Call("T", 2, "d", 3))
	if err != nil {
		t.Fatal(err)
	}
	noDecisionBeforeBegin(t, dec)
	servertest.Send(t, a, simsidecar.Begin("T", 1), simsidecar.Call("T", 1, "x", 2))
	decisionAfterBegin(t, dec, "v2", "T is new")
	if n := ts.Metric(`coordinator_begin_wait_seconds_count{outcome="begun"}`); n != 1 {
		t.Fatalf("begin waits ended by the BEGIN = %v, want 1", n)
	}
}

// longLived registers a simulated sidecar whose session outlives the test
// without heartbeats, and a 3-minute fuzz run (servertest.Sidecar's
// expires in 2 s).
func longLived(ts testServer, instance, svc, version string, deps ...string) *simsidecar.Sidecar {
	sc, _ := ts.Register(&pb.Register{InstanceId: instance, Service: svc, Version: version, Dependencies: deps,
		HeartbeatInterval: durationpb.New(10 * time.Minute), AllowedMisses: 2})
	return sc
}
