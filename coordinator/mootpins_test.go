package coordinator_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// The first-use pin of a transaction that ended is deleted from etcd while
// the update goes on (not kept until it ends, one key per transaction it
// saw); a live transaction's pin stays, and the update still drains.
func TestPinOfEndedTransactionIsDeleted(t *testing.T) {
	ts := servertest.Start(t, "")
	ctx := context.Background()
	a := ts.Sidecar("a-1", "a", "v1", "s")
	keepAlive(t, a)
	keepAlive(t, ts.Sidecar("s-1", "s", "v1"))
	keepAlive(t, ts.Sidecar("s-2", "s", "v2"))

	// H used s@v1 and may call it again: v1 is not drained while it lives.
	servertest.Send(t, a, simsidecar.Begin("H", 1), simsidecar.Call("H", 1, "s", 2), simsidecar.Return("H", 2))
	u, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "s", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, "DRAINING", func() bool {
		g, err := ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		return err == nil && g.Phase == pb.Phase_PHASE_DRAINING
	})
	// T and U first use s now: each is pinned before its call is answered.
	for _, txn := range []string{"T", "U"} {
		servertest.Send(t, a, simsidecar.Begin(txn, 1))
		d, _, err := a.SendWait(simsidecar.Call(txn, 1, "s", 2))
		if err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-d:
			if m.GetVersion() != "v2" {
				t.Fatalf("%s's call: %v, want v2", txn, m)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no decision for %s's call", txn)
		}
		servertest.Send(t, a, simsidecar.Return(txn, 2))
	}
	keys := storage.Keys{}
	pinned := func(txn string) bool {
		resp, err := ts.Client().Get(ctx, keys.Pin("s", txn), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count == 1
	}
	if !pinned("T") || !pinned("U") {
		t.Fatalf("pins of T and U: %v %v, want both in etcd", pinned("T"), pinned("U"))
	}

	servertest.Send(t, a, simsidecar.End("T"))
	servertest.Eventually(t, 10*time.Second, "T's pin to be deleted", func() bool { return !pinned("T") })
	if !pinned("U") {
		t.Fatal("U's pin was deleted while U is live")
	}
	if g, err := ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id}); err != nil || g.Phase != pb.Phase_PHASE_DRAINING {
		t.Fatalf("update: %v %v, want DRAINING (H still uses v1)", g.GetPhase(), err)
	}
	servertest.Send(t, a, simsidecar.End("U"), simsidecar.End("H"))
	servertest.Eventually(t, 10*time.Second, "DONE", func() bool {
		g, err := ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		return err == nil && g.Phase == pb.Phase_PHASE_DONE
	})
}
