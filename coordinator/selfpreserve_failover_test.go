package coordinator_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// Self-preservation across a failover or a restart (DESIGN.md §6, §7): the
// mode is stored, and a new leader resumes it with the same queue, holding
// every switch until the queued sidecars are back or their grace ends.
//
// Sessions that must outlive the failover get 6 s leases (MinSessionTTL):
// the other replica leads within the 2 s leader TTL and gives every session
// it restores a fresh TTL to re-register in.

var spKeys = storage.Keys{Prefix: storage.DefaultPrefix}

// spFailoverOpts: sessions outlive a failover; half of them expiring
// together is a mass expiry.
func spFailoverOpts(grace time.Duration) servertest.Option {
	return func(c *server.Config) {
		c.Coordinator.MinSessionTTL = coordinator.DefaultMinSessionTTL
		c.Coordinator.SelfPreservationRatio = 0.5
		c.Coordinator.SelfPreservationGrace = grace
	}
}

// storedSP reads the stored self-preservation record: nil if there is none.
func storedSP(t *testing.T, st storage.Store) *pb.SelfPreservationRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	loaded, err := st.Load(ctx)
	if err != nil {
		t.Fatalf("get the self-preservation record: %v", err)
	}
	if loaded.SelfPreservation == nil {
		return nil
	}
	rec := &pb.SelfPreservationRecord{}
	if err := proto.Unmarshal(loaded.SelfPreservation.Value, rec); err != nil {
		t.Fatalf("decode the self-preservation record: %v", err)
	}
	return rec
}

func storedQueue(rec *pb.SelfPreservationRecord) []string {
	var ids []string
	for _, q := range rec.GetQueued() {
		ids = append(ids, q.InstanceId)
	}
	return ids
}

// spActive reports whether ts reports self-preservation; false while no
// replica answers (a failover).
func spActive(ts testServer) bool {
	sp, err := ts.AdminClient().GetSelfPreservation(context.Background(), &pb.GetSelfPreservationRequest{})
	return err == nil && sp.Active
}

// startUpdate starts an update of svc to version to with strategy s.
func startUpdate(t *testing.T, ts testServer, svc, to string, s pb.Strategy) *pb.Update {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	u, err := ts.AdminClient().StartUpdate(ctx, &pb.StartUpdateRequest{Service: svc, ToVersion: to, Strategy: s})
	if err != nil {
		t.Fatalf("start %s update of %s: %v", s, svc, err)
	}
	return u
}

// stillHeld checks, for a while (many progress checks), that the updates
// stay in the phases given: switches are held. A hold can only be seen as
// nothing happening, so this watches for some time; want is checked at
// every poll and the first change fails the test.
func stillHeld(t *testing.T, ts testServer, want map[string]pb.Phase) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		for id, p := range want {
			if got := getUpdate(t, ts, id); got.Phase != p {
				t.Fatalf("update %s (%s) is %s while self-preservation holds switches, want %s",
					id, got.Strategy, got.Phase, p)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitUpdateMode waits until sc's routing table puts svc in update mode.
func waitUpdateMode(t *testing.T, sc *simsidecar.Sidecar, svc string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), spWait)
	defer cancel()
	if err := sc.WaitRouting(ctx, func(r *pb.Routing) bool {
		for _, s := range r.GetServices() {
			if s.Service == svc {
				return s.UpdateMode
			}
		}
		return false
	}); err != nil {
		t.Fatalf("waiting for %s in update mode: %v", svc, err)
	}
}

// The leader is in self-preservation with four queued sessions, and a CV
// update of auth switched before: T1 used auth@v1, T2 auth@v2 (its pin went
// with its session's lease). The leader dies. The new leader reports the
// mode with the same queue and holds every switch: the CV update is not
// drained (T1, unknown to it, may call v1 again) and a WF update of
// billing does not switch, though nothing it knows blocks either. The
// queued sidecars come back with their roots: the mode ends, T1 and T2 are
// routed to the versions they used, and once they end both updates finish.
func TestSelfPreservationSurvivesFailover(t *testing.T) {
	cl := servertest.StartCluster(t, 2, spFailoverOpts(0))
	a := cl.Leader(spWait)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	deps := []string{"auth", "billing"}
	p1, _, cutP1 := spSidecar(t, a, "p-1", "portal", "v1", deps)
	p2, _, cutP2 := spSidecar(t, a, "p-2", "portal", "v1", deps)
	_, _, cutP3 := spSidecar(t, a, "p-3", "portal", "v1", deps)
	_, _, cutP4 := spSidecar(t, a, "p-4", "portal", "v1", deps)
	stays := [][3]string{{"a-1", "auth", "v1"}, {"a-2", "auth", "v2"}, {"b-1", "billing", "v1"}, {"b-2", "billing", "v2"}}
	for _, s := range stays {
		spSidecar(t, a, s[0], s[1], s[2], nil)
	}

	servertest.Send(t, p1, simsidecar.Begin("T1", 1), simsidecar.Call("T1", 1, "auth", 2), simsidecar.Return("T1", 2))
	cv := startUpdate(t, a, "auth", "v2", pb.Strategy_STRATEGY_CV)
	servertest.Eventually(t, spWait, "the CV update to switch", func() bool {
		return getUpdate(t, a, cv.Id).Phase == pb.Phase_PHASE_DRAINING
	})
	waitUpdateMode(t, p2, "auth")
	servertest.Send(t, p2, simsidecar.Begin("T2", 1))
	if v, err := p2.RouteCall(ctx, "T2", 1, "auth", 2); err != nil || v != "v2" {
		t.Fatalf("T2's first call to auth after the switch: %q %v, want v2", v, err)
	}
	servertest.Send(t, p2, simsidecar.Return("T2", 2))

	for _, cut := range []func(){cutP1, cutP2, cutP3, cutP4} {
		cut()
	}
	queued := []string{"p-1", "p-2", "p-3", "p-4"}
	servertest.Eventually(t, spWait, "self-preservation to start with four queued", func() bool {
		sp := getSP(t, a)
		return sp.Active && slices.Equal(sp.QueuedSessions, queued)
	})
	before := getSP(t, a)
	// Stored: the record, and T2's pin again, without a lease.
	servertest.Eventually(t, spWait, "the mode and the queued transactions' pins to be stored", func() bool {
		rec := storedSP(t, a.Store())
		if !slices.Equal(storedQueue(rec), queued) {
			return false
		}
		resp, err := a.Client().Get(ctx, spKeys.Pin("auth", "T2"))
		return err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == "v2" && resp.Kvs[0].Lease == 0
	})
	rec := storedSP(t, a.Store())
	if !rec.Since.AsTime().Equal(before.Since.AsTime()) || rec.Grace.AsDuration() != 2*coordinator.DefaultSelfPreservationWindow ||
		rec.Ratio != 0.5 || rec.Queued[0].Service != "portal" || rec.Queued[0].Version != "v1" || rec.Queued[0].ExpiredAt == nil {
		t.Fatalf("stored record %v, want since %v, the settings and portal@v1 sessions with their expiry", rec, before.Since.AsTime())
	}

	cl.Crash(a)
	b := cl.Leader(spWait)
	sp := getSP(t, b)
	if !sp.Active || !slices.Equal(sp.QueuedSessions, queued) || !sp.Since.AsTime().Equal(before.Since.AsTime()) || sp.Activations != 1 {
		t.Fatalf("new leader: %v, want active since %v with %v queued", sp, before.Since.AsTime(), queued)
	}
	if got := b.Metric("coordinator_self_preservation_active"); got != 1 {
		t.Errorf("coordinator_self_preservation_active at the new leader = %v, want 1", got)
	}
	if got := b.Metric("coordinator_self_preservation_queued_sessions"); got != 4 {
		t.Errorf("coordinator_self_preservation_queued_sessions at the new leader = %v, want 4", got)
	}
	var h coordinator.HealthReport
	if code := b.REST("/health", &h); code != http.StatusOK || !h.SelfPreservation.Active || !slices.Equal(h.SelfPreservation.Queued, queued) {
		t.Fatalf("/health at the new leader = HTTP %d %+v, want self-preservation with %v queued", code, h.SelfPreservation, queued)
	}

	// The sidecars that stayed find the new leader: the resync hold is
	// over, only self-preservation holds switches now.
	for _, s := range stays {
		spSidecar(t, b, s[0], s[1], s[2], nil)
	}
	wf := startUpdate(t, b, "billing", "v2", pb.Strategy_STRATEGY_WF)
	servertest.Eventually(t, spWait, "the WF update to wait for billing", func() bool {
		return getUpdate(t, b, wf.Id).Phase == pb.Phase_PHASE_WAITING
	})
	if f := b.FreeREST("billing"); !f.Free {
		t.Fatalf("billing at the new leader: %v, want free (the queued sessions' transactions are unknown to it)", f)
	}
	stillHeld(t, b, map[string]pb.Phase{cv.Id: pb.Phase_PHASE_DRAINING, wf.Id: pb.Phase_PHASE_WAITING})
	if !getSP(t, b).Active {
		t.Fatal("self-preservation ended with nobody back")
	}

	// The queued sidecars come back: p-1 and p-2 still run T1 and T2.
	back := map[string]*simsidecar.Sidecar{}
	roots := map[string]string{"p-1": "T1", "p-2": "T2"}
	for _, id := range queued {
		if !getSP(t, b).Active {
			t.Fatalf("self-preservation ended before %s came back", id)
		}
		var rs []string
		if r := roots[id]; r != "" {
			rs = append(rs, r)
		}
		sc, r, _ := spSidecar(t, b, id, "portal", "v1", deps, rs...)
		if r.Resynced != uint32(len(rs)) || r.Resumed {
			t.Errorf("%s back: %v, want a new session with %d roots resynced", id, r, len(rs))
		}
		back[id] = sc
	}
	if sp := getSP(t, b); sp.Active || len(sp.QueuedSessions) != 0 {
		t.Fatalf("after every queued session came back: %v, want inactive", sp)
	}
	// The delete is written behind.
	servertest.Eventually(t, spWait, "the stored mode to be deleted", func() bool { return storedSP(t, b.Store()) == nil })
	txns := txnMap(t, b)
	for id, owner := range map[string]string{"T1": "p-1", "T2": "p-2"} {
		if tx := txns[id]; tx == nil || !tx.Legacy || tx.Owner != owner {
			t.Fatalf("%s after %s came back = %v, want legacy, owned by %s", id, owner, tx, owner)
		}
	}
	// Each goes on with the version of auth it used.
	waitUpdateMode(t, back["p-1"], "auth")
	waitUpdateMode(t, back["p-2"], "auth")
	if v, err := back["p-1"].RouteCall(ctx, "T1", 1, "auth", 3); err != nil || v != "v1" {
		t.Fatalf("T1 (used auth@v1) calls auth again: %q %v, want v1", v, err)
	}
	if v, err := back["p-2"].RouteCall(ctx, "T2", 1, "auth", 3); err != nil || v != "v2" {
		t.Fatalf("T2 (used auth@v2) calls auth again: %q %v, want v2", v, err)
	}
	servertest.Send(t, back["p-1"], simsidecar.Return("T1", 3), simsidecar.End("T1"))
	servertest.Send(t, back["p-2"], simsidecar.Return("T2", 3), simsidecar.End("T2"))
	for _, id := range []string{cv.Id, wf.Id} {
		servertest.Eventually(t, spWait, "update "+id+" to finish", func() bool {
			return getUpdate(t, b, id).Phase == pb.Phase_PHASE_DONE
		})
	}
}

// A queued sidecar that never comes back is dropped at the new leader once
// its grace (counted from its expiry at the old leader) ends; the mode
// ends and the held switch happens.
func TestSelfPreservationGraceEndsAtNewLeader(t *testing.T) {
	const grace = 10 * time.Second
	cl := servertest.StartCluster(t, 2, spFailoverOpts(grace))
	a := cl.Leader(spWait)
	var cuts []func()
	for _, id := range []string{"p-1", "p-2", "p-3"} {
		_, _, cut := spSidecar(t, a, id, "portal", "v1", []string{"auth"})
		cuts = append(cuts, cut)
	}
	stays := [][3]string{{"a-1", "auth", "v1"}, {"a-2", "auth", "v2"}}
	for _, s := range stays {
		spSidecar(t, a, s[0], s[1], s[2], nil)
	}
	for _, cut := range cuts {
		cut()
	}
	queued := []string{"p-1", "p-2", "p-3"}
	servertest.Eventually(t, spWait, "self-preservation to start and be stored", func() bool {
		return slices.Equal(getSP(t, a).QueuedSessions, queued) && slices.Equal(storedQueue(storedSP(t, a.Store())), queued)
	})

	cl.Crash(a)
	b := cl.Leader(spWait)
	if sp := getSP(t, b); !sp.Active || !slices.Equal(sp.QueuedSessions, queued) {
		t.Fatalf("new leader: %v, want active with %v queued", sp, queued)
	}
	for _, s := range stays {
		spSidecar(t, b, s[0], s[1], s[2], nil)
	}
	wf := startUpdate(t, b, "auth", "v2", pb.Strategy_STRATEGY_WF)
	// p-1 and p-2 come back; p-3 is dead.
	for _, id := range []string{"p-1", "p-2"} {
		spSidecar(t, b, id, "portal", "v1", []string{"auth"})
	}
	if sp := getSP(t, b); !sp.Active || !slices.Equal(sp.QueuedSessions, []string{"p-3"}) {
		t.Fatalf("after two came back: %v, want active with p-3 queued", sp)
	}
	servertest.Eventually(t, spWait+grace, "p-3's grace to end at the new leader", func() bool {
		u := getUpdate(t, b, wf.Id)
		active := spActive(b) // after: a switch seen, then the mode, is a switch during it
		if active && u.SwitchedAt != nil {
			t.Fatalf("the WF update switched while self-preservation was active: %v", u)
		}
		return !active
	})
	if got := b.Metric(`coordinator_sessions_dropped_total{reason="self_preservation_grace"}`); got != 1 {
		t.Errorf("sessions dropped at the end of their grace at the new leader = %v, want 1", got)
	}
	if sp := getSP(t, b); len(sp.QueuedSessions) != 0 {
		t.Fatalf("after the grace: %v, want nothing queued", sp)
	}
	servertest.Eventually(t, spWait, "the WF update to switch", func() bool {
		return getUpdate(t, b, wf.Id).Phase == pb.Phase_PHASE_DONE
	})
	servertest.Eventually(t, spWait, "the stored mode to be deleted", func() bool { return storedSP(t, b.Store()) == nil })
}

// A replica alone on its etcd restarts during self-preservation: it
// resumes the mode (written at the latest by its clean stop), and the
// queued sidecar coming back ends it, its root legacy.
func TestSelfPreservationSurvivesRestart(t *testing.T) {
	opts := func(c *server.Config) {
		c.Coordinator.SelfPreservationRatio = 1
		c.Coordinator.SelfPreservationMin = 1
	}
	ts := servertest.Start(t, "", opts)
	sc := ts.Sidecar("p-1", "portal", "v1") // not kept alive: its lease runs out
	servertest.Send(t, sc, simsidecar.Begin("T", 1))
	sc.Close()
	servertest.Eventually(t, spWait, "self-preservation to start", func() bool { return spActive(ts) })
	before := getSP(t, ts)
	ts.Stop()

	ts2 := servertest.Start(t, ts.Dir, opts)
	sp := getSP(t, ts2)
	if !sp.Active || !slices.Equal(sp.QueuedSessions, []string{"p-1"}) || !sp.Since.AsTime().Equal(before.Since.AsTime()) {
		t.Fatalf("after the restart: %v, want active since %v with p-1 queued", sp, before.Since.AsTime())
	}
	if n := ts2.Txns("").Total; n != 0 {
		t.Fatalf("%d transactions after the restart, want none (T's record went with its lease)", n)
	}
	_, r := ts2.Register(&pb.Register{InstanceId: "p-1", Service: "portal", Version: "v1", Address: "127.0.0.1:1",
		LiveRoots: []*pb.LiveRoot{{TxnId: "T", SubId: 1}}})
	if r.Resynced != 1 {
		t.Fatalf("p-1 back: %v, want T resynced", r)
	}
	if sp := getSP(t, ts2); sp.Active || len(sp.QueuedSessions) != 0 {
		t.Fatalf("after p-1 came back: %v, want inactive", sp)
	}
	if tx := txnMap(t, ts2)["T"]; tx == nil || !tx.Legacy || tx.Owner != "p-1" {
		t.Fatalf("T after p-1 came back = %v, want legacy, owned by p-1", tx)
	}
	servertest.Eventually(t, spWait, "the stored mode to be deleted", func() bool { return storedSP(t, ts2.Store()) == nil })
}
