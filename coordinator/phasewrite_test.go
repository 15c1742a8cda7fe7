package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/etcdgate"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// While etcd holds the write of an update's phase (here: its switch), the
// event path goes on: every stream's batches are applied and acknowledged,
// admin reads answer, and only the calls to the service being switched wait
// (parked, as held calls are) until the new phase is stored and applied;
// then they go to the new version (DESIGN.md §4.2, §5).
func TestHeldPhaseWriteDoesNotStallStreams(t *testing.T) {
	var gate *etcdgate.KV
	ts := servertest.Start(t, "", servertest.GateUpdateWrites(&gate))
	t.Cleanup(gate.Release) // before the replica stops
	ctx := context.Background()
	a := ts.Sidecar("a-1", "a", "v1", "s")
	ts.Sidecar("s-1", "s", "v1")
	ts.Sidecar("s-2", "s", "v2")
	b := ts.Sidecar("b-1", "b", "v1")

	// T used s and, without hints, keeps it from being free until it ends.
	servertest.Send(t, a, simsidecar.Begin("T", 1), simsidecar.Call("T", 1, "s", 2), simsidecar.Return("T", 2))
	u, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "s", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_WF})
	if err != nil {
		t.Fatal(err)
	}
	getUpdate := func(within time.Duration) (*pb.Update, error) {
		ctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		return ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
	}
	servertest.Eventually(t, 10*time.Second, "WAITING", func() bool {
		g, err := getUpdate(10 * time.Second)
		return err == nil && g.Phase == pb.Phase_PHASE_WAITING
	})

	// T ends: s is free, the switch is decided, and etcd holds its write.
	gate.Hold()
	endAck, err := a.SendAsync(simsidecar.End("T"))
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, "the switch's write to reach etcd", func() bool { return gate.Waiting() == 1 })

	select {
	case ack, ok := <-endAck:
		if !ok || len(ack.Errors) > 0 {
			t.Fatalf("a's batch: %v (stream ended: %v)", ack, !ok)
		}
	case <-time.After(time.Second):
		t.Fatal("a's batch was not acknowledged within 1s while the phase write is held")
	}
	for i := range 20 {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		ack, err := b.Send(sctx, simsidecar.Begin(servertest.TxnID(i), 1), simsidecar.End(servertest.TxnID(i)))
		cancel()
		if err != nil || len(ack.Errors) > 0 {
			t.Fatalf("b's batch %d while the phase write is held: %v %v, want acknowledged within 1s", i, ack.GetErrors(), err)
		}
	}
	if n := ts.Leader().Live(); n != 0 {
		t.Fatalf("%d live transactions, want 0: b's events were not applied", n)
	}
	if g, err := getUpdate(time.Second); err != nil || g.Phase != pb.Phase_PHASE_WAITING {
		t.Fatalf("update while its switch is stored: %v %v, want WAITING within 1s", g.GetPhase(), err)
	}
	// A call to s must be decided, and the switch is under way: it waits.
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := a.Send(sctx, simsidecar.Begin("T2", 1)); err != nil {
		t.Fatal(err)
	}
	dec, callAck, err := a.SendWait(simsidecar.Call("T2", 1, "s", 2))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ack := <-callAck:
		if len(ack.GetErrors()) > 0 {
			t.Fatalf("the call's batch: %v", ack.Errors)
		}
	case <-time.After(time.Second):
		t.Fatal("the call's batch was not acknowledged within 1s")
	}
	select {
	case m := <-dec:
		t.Fatalf("a call to s was decided while its switch was being stored: %v", m)
	case <-time.After(300 * time.Millisecond):
	}
	if gate.Waiting() != 1 {
		t.Fatalf("%d phase writes held, want the switch's still", gate.Waiting())
	}

	gate.Release()
	select {
	case m := <-dec:
		if m.GetVersion() != "v2" || m.GetError() != "" {
			t.Fatalf("decision once switched: %v, want v2", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no decision once the switch was stored")
	}
	servertest.Eventually(t, 10*time.Second, "DONE", func() bool {
		g, err := getUpdate(10 * time.Second)
		return err == nil && g.Phase == pb.Phase_PHASE_DONE
	})
}

// A registration that replaces a session (same instance, new version) does
// its etcd work first and then replaces the old session in one step: while
// etcd holds the new session's write, the old session and its transaction
// are still in place and other streams go on; once stored, the new session
// replaces it.
func TestRegistrationAppliesOnceStored(t *testing.T) {
	var gate *etcdgate.KV
	ts := servertest.Start(t, "", servertest.GateWrites(storage.Keys.Sessions, &gate))
	t.Cleanup(gate.Release) // before the replica stops
	ctx := context.Background()
	old, _ := ts.Register(&pb.Register{InstanceId: "a-1", Service: "a", Version: "v1", Address: "127.0.0.1:1"})
	servertest.Send(t, old, simsidecar.Begin("T", 1))
	b := ts.Sidecar("b-1", "b", "v1")

	gate.Hold()
	type result struct {
		r   *pb.Registered
		err error
	}
	done := make(chan result, 1)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		sc, r, err := simsidecar.Connect(rctx, ts.Conn, &pb.Register{InstanceId: "a-1", Service: "a", Version: "v2", Address: "127.0.0.1:2"})
		if err == nil {
			t.Cleanup(sc.Close)
		}
		done <- result{r, err}
	}()
	servertest.Eventually(t, 10*time.Second, "the new session's write to reach etcd", func() bool { return gate.Waiting() == 1 })

	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if ack, err := b.Send(sctx, simsidecar.Begin(servertest.TxnID(1), 1), simsidecar.End(servertest.TxnID(1))); err != nil || len(ack.Errors) > 0 {
		t.Fatalf("b's batch while a registration's write is held: %v %v", ack.GetErrors(), err)
	}
	sessions := func() map[string]*pb.Session {
		ss, err := ts.Admin.ListSessions(sctx, &pb.ListSessionsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]*pb.Session{}
		for _, s := range ss.Sessions {
			out[s.InstanceId] = s
		}
		return out
	}
	if s := sessions()["a-1"]; s.GetVersion() != "v1" || s.GetRoots() != 1 {
		t.Fatalf("a-1 while its new session is being stored: %v, want the v1 session with its root", s)
	}
	if txn(t, ts, "T") == nil {
		t.Fatal("the old session's transaction ended before the new session was stored")
	}
	select {
	case r := <-done:
		t.Fatalf("registered while its session's write was held: %v %v", r.r, r.err)
	default:
	}

	gate.Release()
	var r result
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("no answer to the registration once released")
	}
	if r.err != nil || r.r.Resumed {
		t.Fatalf("registration: %v %v, want a new session", r.r, r.err)
	}
	if s := sessions()["a-1"]; s.GetVersion() != "v2" || s.GetRoots() != 0 {
		t.Fatalf("a-1 after its registration: %v, want the v2 session", s)
	}
	if txn(t, ts, "T") != nil {
		t.Fatal("the replaced session's transaction is still live")
	}
}

// A call parked while the end of an update (DONE) is being stored is
// decided once the update is over, at the service's default (the new
// version), as every later call of its transaction will be. Here its
// transaction's BEGIN has not arrived: decided as the update would (one
// not seen begin may have used the old version), it went to the old
// version, and with the update over and its pin deleted, the
// transaction's next call went to the new one: a version-inconsistent
// transaction (seen under load in TestFailoverInEveryPhase, CV).
func TestCallParkedWhileDoneIsStoredGoesToDefault(t *testing.T) {
	var gate *etcdgate.KV
	ts := servertest.Start(t, "", servertest.GateUpdateWrites(&gate))
	t.Cleanup(gate.Release) // before the replica stops
	ctx := context.Background()
	a := ts.Sidecar("a-1", "a", "v1", "s")
	ts.Sidecar("s-1", "s", "v1")
	ts.Sidecar("s-2", "s", "v2")

	// T used s@v1 and, without hints, keeps v1 from draining until it ends.
	servertest.Send(t, a, simsidecar.Begin("T", 1), simsidecar.Call("T", 1, "s", 2), simsidecar.Return("T", 2))
	u, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "s", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV})
	if err != nil {
		t.Fatal(err)
	}
	getUpdate := func() (*pb.Update, error) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
	}
	servertest.Eventually(t, 10*time.Second, "DRAINING", func() bool {
		g, err := getUpdate()
		return err == nil && g.Phase == pb.Phase_PHASE_DRAINING
	})

	// T ends: v1 is drained; SWITCHED is decided and held at the gate.
	gate.Hold()
	before := gate.Matched()
	servertest.Send(t, a, simsidecar.End("T"))
	servertest.Eventually(t, 10*time.Second, "SWITCHED's write to reach etcd", func() bool { return gate.Waiting() == 1 })
	// Once SWITCHED is stored, DONE is decided at once; its write is
	// delayed (within persistUpdate's 5 s), and a call comes meanwhile.
	gate.SetDelay(1500 * time.Millisecond)
	gate.Release()
	servertest.Eventually(t, 10*time.Second, "DONE's write to reach etcd", func() bool {
		return gate.Matched() == before+2 && gate.Waiting() == 1
	})
	dec, callAck, err := a.SendWait(simsidecar.Call("U", 1, "s", 2)) // U's BEGIN is behind
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ack := <-callAck:
		if len(ack.GetErrors()) > 0 {
			t.Fatalf("the call's batch: %v", ack.Errors)
		}
	case <-time.After(time.Second):
		t.Fatal("the call's batch was not acknowledged within 1s")
	}
	var m *pb.CallDecision
	select {
	case m = <-dec:
	case <-time.After(10 * time.Second):
		t.Fatal("no decision once DONE was stored")
	}
	g, err := getUpdate()
	if err != nil || g.Phase != pb.Phase_PHASE_DONE {
		t.Fatalf("update once the call was decided: %v %v, want DONE", g.GetPhase(), err)
	}
	if m.GetVersion() != "v2" || m.GetError() != "" {
		t.Fatalf("call parked while DONE was stored: decided %v, want v2 (U's next call goes to the default, v2)", m)
	}
	servertest.Send(t, a, simsidecar.Return("U", 2), simsidecar.Begin("U", 1), simsidecar.End("U"))
}
