package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// These tests run on the memory store (memharness_test.go): sessions,
// leases (which expire there too) and self-preservation's counting, not
// durability.

func sessionIDs(t *testing.T, ts testServer) []string {
	t.Helper()
	resp, err := ts.AdminClient().ListSessions(context.Background(), &pb.ListSessionsRequest{})
	if err != nil {
		t.Fatalf("ListSessions: %v", err)
	}
	var ids []string
	for _, s := range resp.Sessions {
		ids = append(ids, s.InstanceId)
	}
	slices.Sort(ids)
	return ids
}

// A sidecar that deregisters leaves at once: its record and lease are gone,
// the transaction that ran only on it ends, the one still running
// downstream is kept (blocking auth) for the implicit timeout, then ends.
// Its leaving is no expiry.
func TestDeregisterEndsSessionAtOnce(t *testing.T) {
	const keep = 2 * time.Second
	ts := startMem(t, func(c *coordinator.Config) { c.ImplicitTimeout = keep })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p1, r, _ := spSidecar(t, ts, "p-1", "portal", "v1", []string{"auth"})
	spSidecar(t, ts, "p-2", "portal", "v1", []string{"auth"})
	spSidecar(t, ts, "a-1", "auth", "v1", nil)
	// local runs only at portal; remote's call to auth has not returned.
	servertest.Send(t, p1, simsidecar.Begin("local", 1),
		simsidecar.Begin("remote", 1), simsidecar.Call("remote", 1, "auth", 2))
	if f := ts.Freeness("auth"); f.Free {
		t.Fatalf("auth free while remote runs there: %v", f)
	}

	d, err := p1.Deregister(ctx, "test shutdown")
	if err != nil {
		t.Fatalf("Deregister: %v", err)
	}
	if d.Ended != 1 || d.Kept != 1 {
		t.Fatalf("Deregistered = %v, want 1 ended (local), 1 kept (remote)", d)
	}
	if got := sessionIDs(t, ts); !slices.Equal(got, []string{"a-1", "p-2"}) {
		t.Fatalf("sessions after p-1 deregistered = %v, want [a-1 p-2]", got)
	}
	key := ts.Leader().Keys().Session("p-1")
	if val, _, ok := ts.Store.Get(key); ok {
		t.Fatalf("session record of p-1 after Deregister: %q, want none", val)
	}
	if ttl, err := ts.Store.TimeToLive(ctx, storage.LeaseID(r.LeaseId)); !errors.Is(err, storage.ErrLeaseExpired) {
		t.Fatalf("lease of p-1 after Deregister: %v %v, want revoked", ttl, err)
	}
	txns := txnMap(t, ts)
	if txns["local"] != nil {
		t.Error("local, which ran only on the deregistered sidecar, is still live")
	}
	if tx := txns["remote"]; tx == nil || tx.Owner != "p-1" {
		t.Fatalf("remote = %v, want kept, owned by p-1", tx)
	}
	if f := ts.Freeness("auth"); f.Free {
		t.Fatal("auth free while the kept remote still runs there")
	}
	if got := ts.Metric(`coordinator_sessions_dropped_total{reason="deregistered"}`); got != 1 {
		t.Errorf("sessions dropped as deregistered = %v, want 1", got)
	}
	servertest.Eventually(t, keep+10*time.Second, "the kept transaction to end", func() bool {
		return txnMap(t, ts)["remote"] == nil
	})
	if f := ts.Freeness("auth"); !f.Free {
		t.Fatalf("auth after the kept transaction ended: %v, want free", f)
	}
	// Well past its TTL: the lease never expired, it was revoked.
	time.Sleep(3 * time.Second)
	if sp := getSP(t, ts); sp.RecentExpiries != 0 || sp.Activations != 0 {
		t.Fatalf("self-preservation = %v, want no expiry counted", sp)
	}
	if got := ts.Metric(`coordinator_sessions_dropped_total{reason="lease_expired"}`); got != 0 {
		t.Errorf("sessions dropped as expired = %v, want 0", got)
	}
}

// A Deregister before Register ends the stream with FailedPrecondition.
func TestDeregisterBeforeRegister(t *testing.T) {
	ts := startMem(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := pb.NewSidecarServiceClient(ts.Conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Deregister{Deregister: &pb.Deregister{}}}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Deregister before Register: %v, want FailedPrecondition", err)
	}
}

// spFleet registers n kept-alive portal sidecars named prefix-i and
// returns their sidecars and cut functions.
func spFleet(t *testing.T, ts testServer, prefix string, n int) ([]*simsidecar.Sidecar, []func()) {
	t.Helper()
	scs := make([]*simsidecar.Sidecar, n)
	cuts := make([]func(), n)
	for i := range n {
		scs[i], _, cuts[i] = spSidecar(t, ts, fmt.Sprintf("%s-%d", prefix, i), "portal", "v1", nil)
	}
	return scs, cuts
}

// Self-preservation counts only real losses (issue 13, item 6), with the
// default settings (60 s window, 80 %, at least 3).
//
// A fleet of 50 where 10 pods are redeployed one after another, each
// deregistering and replaced by a new instance: nothing counts as an
// expiry, the mode never starts.
func TestSelfPreservationRollingRedeployOf10In50(t *testing.T) {
	ts := startMem(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	scs, _ := spFleet(t, ts, "pod", 50)
	for i := range 10 {
		if _, err := scs[i].Deregister(ctx, "rolling redeploy"); err != nil {
			t.Fatalf("pod-%d: Deregister: %v", i, err)
		}
		spSidecar(t, ts, fmt.Sprintf("pod-new-%d", i), "portal", "v1", nil)
		if sp := getSP(t, ts); sp.Active || sp.RecentExpiries != 0 {
			t.Fatalf("after pod %d was redeployed: %v, want inactive, no expiry", i, sp)
		}
	}
	time.Sleep(3 * time.Second) // longer than a lease: none of them expires later
	if sp := getSP(t, ts); sp.Active || sp.Activations != 0 || sp.RecentExpiries != 0 {
		t.Fatalf("after the rolling redeploy: %v, want never started, no expiry", sp)
	}
	if n := len(sessionIDs(t, ts)); n != 50 {
		t.Fatalf("%d sessions after the redeploy, want 50", n)
	}
	if got := ts.Metric(`coordinator_sessions_dropped_total{reason="deregistered"}`); got != 10 {
		t.Errorf("sessions dropped as deregistered = %v, want 10", got)
	}
}

// 45 of 50 leases expiring within the window is a mass expiry.
func TestSelfPreservation45Of50Expire(t *testing.T) {
	ts := startMem(t)
	scs, cuts := spFleet(t, ts, "pod", 50)
	servertest.Send(t, scs[0], simsidecar.Begin("T", 1))
	for _, cut := range cuts[:45] {
		cut()
	}
	servertest.Eventually(t, spWait, "self-preservation to start", func() bool { return getSP(t, ts).Active })
	// The mode may start before pod-0's own lease expires (leases expire
	// one by one, not in etcd's 500 ms batches): T is kept, and once its
	// pod expires it is legacy.
	servertest.Eventually(t, spWait, "T of an expired pod to be kept as legacy", func() bool {
		tx := txnMap(t, ts)["T"]
		if tx == nil {
			t.Fatal("T of an expired pod was ended, want kept as legacy")
		}
		return tx.Legacy
	})
	servertest.Eventually(t, spWait, "all 45 expiries to be queued", func() bool {
		return len(getSP(t, ts).QueuedSessions) == 45
	})
}

// A fleet of 3 redeployed at once, cleanly, does not start the mode; the
// same fleet lost at once (their leases expire) does: the threshold is the
// one that held before, only clean shutdowns no longer count.
func TestSelfPreservationFleetOf3RedeployedAtOnce(t *testing.T) {
	ts := startMem(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	scs, _ := spFleet(t, ts, "pod", 3)
	for i, sc := range scs {
		if _, err := sc.Deregister(ctx, "redeploy"); err != nil {
			t.Fatalf("pod-%d: Deregister: %v", i, err)
		}
	}
	if n := len(sessionIDs(t, ts)); n != 0 {
		t.Fatalf("%d sessions after all three deregistered, want 0", n)
	}
	_, cuts := spFleet(t, ts, "pod-new", 3)
	time.Sleep(3 * time.Second) // longer than a lease
	if sp := getSP(t, ts); sp.Active || sp.Activations != 0 || sp.RecentExpiries != 0 {
		t.Fatalf("after a clean redeploy of 3: %v, want never started, no expiry", sp)
	}
	for _, cut := range cuts {
		cut()
	}
	servertest.Eventually(t, spWait, "self-preservation to start when all 3 are lost", func() bool {
		return getSP(t, ts).Active
	})
}
