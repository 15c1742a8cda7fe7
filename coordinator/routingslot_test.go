package coordinator

import (
	"fmt"
	"slices"
	"testing"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func snapMsg(rev uint64, routes ...*pb.ServiceRoute) *routingMsg {
	m := newRoutingMsg(rev, true)
	for _, r := range routes {
		m.set(r.Service, r)
	}
	return m
}

func deltaMsg(rev uint64, removed []string, routes ...*pb.ServiceRoute) *routingMsg {
	m := newRoutingMsg(rev, false)
	for _, n := range removed {
		m.remove(n)
	}
	for _, r := range routes {
		m.set(r.Service, r)
	}
	return m
}

func sr(svc, def string) *pb.ServiceRoute { return &pb.ServiceRoute{Service: svc, DefaultVersion: def} }

func names(r *pb.Routing) []string {
	var out []string
	for _, s := range r.GetServices() {
		out = append(out, s.Service+"@"+s.DefaultVersion)
	}
	return out
}

// A stream that does not read holds one pending routing message: newer
// deltas merge into it per service (last writer wins), a snapshot
// replaces it, and what was queued is never followed by a backlog.
func TestRoutingSlotMergesIntoOnePendingMessage(t *testing.T) {
	var slot routingSlot
	if q, _ := slot.offer(deltaMsg(1, nil, sr("a", "v1"))); q {
		t.Fatal("a delta was taken before the stream's first snapshot")
	}
	snap := snapMsg(2, sr("a", "v1"), sr("b", "v1"))
	if q, _ := slot.offer(snap); !q {
		t.Fatal("the first snapshot was not taken")
	}
	slot.offer(deltaMsg(3, nil, sr("a", "v2")))
	slot.offer(deltaMsg(4, []string{"b"}, sr("c", "v1")))
	slot.offer(deltaMsg(5, nil, sr("a", "v3")))
	if got := snap.routes["a"].DefaultVersion; got != "v1" {
		t.Fatalf("merging changed the shared snapshot: a@%s", got)
	}
	r := slot.take()
	if r.GetDelta() || r.GetRevision() != 5 || !slices.Equal(names(r), []string{"a@v3", "c@v1"}) {
		t.Fatalf("pending after a snapshot and three deltas = delta %v rev %d %v, want the snapshot at 5 with a@v3 c@v1",
			r.GetDelta(), r.GetRevision(), names(r))
	}
	if slot.take() != nil {
		t.Fatal("a second message pending after take")
	}

	// Deltas after the snapshot was sent merge into one delta.
	slot.offer(deltaMsg(6, nil, sr("a", "v4"), sr("b", "v1")))
	slot.offer(deltaMsg(7, []string{"a"}, sr("d", "v1")))
	slot.offer(deltaMsg(8, []string{"d"}, sr("b", "v2")))
	r = slot.take()
	if !r.GetDelta() || r.GetRevision() != 8 || !slices.Equal(names(r), []string{"b@v2"}) ||
		!slices.Equal(r.GetRemoved(), []string{"a", "d"}) {
		t.Fatalf("merged delta = delta %v rev %d %v removed %v, want a delta at 8: b@v2, removed a d",
			r.GetDelta(), r.GetRevision(), names(r), r.GetRemoved())
	}

	// An older delta never follows a newer message.
	if q, _ := slot.offer(deltaMsg(7, nil, sr("x", "v1"))); q {
		t.Fatal("a delta older than the last one sent was taken")
	}
	// A snapshot replaces pending deltas.
	slot.offer(deltaMsg(9, nil, sr("a", "v5")))
	slot.offer(snapMsg(10, sr("b", "v3")))
	r = slot.take()
	if r.GetDelta() || r.GetRevision() != 10 || !slices.Equal(names(r), []string{"b@v3"}) {
		t.Fatalf("pending after a delta and a snapshot = delta %v rev %d %v, want the snapshot", r.GetDelta(), r.GetRevision(), names(r))
	}
}

// A run of deltas past maxPendingDelta services is dropped and the stream
// resynced: it takes no delta until a snapshot comes, at the same
// revision or newer.
func TestRoutingSlotResyncsPastTheBound(t *testing.T) {
	var slot routingSlot
	slot.offer(snapMsg(1, sr("a", "v1")))
	slot.take() // sent
	rev := uint64(1)
	resynced := false
	for i := 0; i <= maxPendingDelta; i++ {
		rev++
		_, resync := slot.offer(deltaMsg(rev, nil, sr(fmt.Sprintf("s%d", i), "v1")))
		if resync {
			resynced = true
			if i != maxPendingDelta {
				t.Fatalf("resynced after %d services pending, want %d", i+1, maxPendingDelta+1)
			}
		}
	}
	if !resynced {
		t.Fatalf("%d services pending and no resync", maxPendingDelta+1)
	}
	if slot.pend != nil {
		t.Fatal("the oversized delta is still pending")
	}
	if q, _ := slot.offer(deltaMsg(rev, nil, sr("late", "v1"))); q {
		t.Fatal("a delta was taken while the stream waits for its resync snapshot")
	}
	if q, _ := slot.offer(snapMsg(rev, sr("a", "v2"))); !q {
		t.Fatal("the resync snapshot at the same revision was not taken")
	}
	if r := slot.take(); r.GetDelta() || !slices.Equal(names(r), []string{"a@v2"}) {
		t.Fatalf("after resync: %v", r)
	}
	if q, _ := slot.offer(deltaMsg(rev+1, nil, sr("b", "v1"))); !q {
		t.Fatal("deltas not taken again after the resync snapshot")
	}
}
