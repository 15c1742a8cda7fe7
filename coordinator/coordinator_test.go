package coordinator_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
	"github.com/coordinator/coordinator/storage/embedetcd"
)

func txn(t *testing.T, ts testServer, id string) *pb.Transaction {
	t.Helper()
	for _, tx := range ts.Txns("").Transactions {
		if tx.TxnId == id {
			return tx
		}
	}
	return nil
}

// Events of one transaction come from several streams: a downstream Call can
// arrive before the entry's Begin and before the upstream Call.
func TestOutOfOrderStreams(t *testing.T) {
	ts := servertest.Start(t, "")
	a := ts.Sidecar("a-1", "a", "v1", "b")
	b := ts.Sidecar("b-1", "b", "v1", "c")
	ts.Sidecar("c-1", "c", "v1")

	servertest.Send(t, b, simsidecar.Call("T", 2, "c", 3)) // b's view first
	tx := txn(t, ts, "T")
	if tx == nil || !tx.Implicit || tx.Owner != "b-1" {
		t.Fatalf("after the downstream call: %v, want an implicit transaction provisionally owned by b-1", tx)
	}
	servertest.Send(t, a, simsidecar.Begin("T", 1), simsidecar.Call("T", 1, "b", 2))
	tx = txn(t, ts, "T")
	if tx == nil || tx.Implicit || tx.Owner != "a-1" || tx.Entry != "a" || len(tx.Running) != 3 {
		t.Fatalf("after Begin and the upstream call: %v, want owned by a-1, entry a, 3 running subs", tx)
	}
	servertest.Send(t, b, simsidecar.Return("T", 3))
	servertest.Send(t, a, simsidecar.Return("T", 2))
	// b's hint about sub 2 arrives after a's Return of sub 2: moot, ignored.
	late := ts.Metric("coordinator_late_events_total")
	done := simsidecar.Done("T", 2, "c")
	if ack := servertest.SendAck(t, b, done); len(ack.Errors) != 0 || len(ack.Late) != 1 ||
		ack.Late[0].Seq != done.Seq || ack.Late[0].Reason != pb.LateReason_LATE_REASON_SUB_RETURNED {
		t.Fatalf("late DONE: errors %v, late %v; want none, seq %d late as its sub returned", ack.Errors, ack.Late, done.Seq)
	}
	if got := ts.Metric("coordinator_late_events_total"); got != late+1 {
		t.Fatalf("late events %v, want %v", got, late+1)
	}
	servertest.Send(t, a, simsidecar.End("T"))
	if n := ts.Txns("").Total; n != 0 {
		t.Fatalf("%d live after End", n)
	}
	// b's late event for the ended transaction is ignored, not an error.
	ack := servertest.SendAck(t, b, simsidecar.Done("T", 2, "c"))
	if len(ack.Errors) != 0 || ts.Txns("").Total != 0 ||
		len(ack.Late) != 1 || ack.Late[0].Reason != pb.LateReason_LATE_REASON_TXN_ENDED || ack.Late[0].TxnId != "T" {
		t.Fatalf("late event: errors %v, late %v, live %d; want ignored as late", ack.Errors, ack.Late, ts.Txns("").Total)
	}
}

// The seed scenario (DESIGN.md §1) with Portal's stream ahead of Proc's:
// once every event has arrived, FREENESS is what in-order delivery gives,
// and the Ack says which events came late.
func TestReorderedStreamsExact(t *testing.T) {
	ts := servertest.Start(t, "")
	portal := ts.Sidecar("portal-1", "portal", "v1", "auth", "proc")
	ts.Sidecar("auth-1", "auth", "v1")
	proc := ts.Sidecar("proc-1", "proc", "v1", "auth", "db")
	ts.Sidecar("db-1", "db", "v1")
	free := func(svc string) bool { t.Helper(); return ts.FreeREST(svc).Free }
	metric := func(reason string) float64 {
		t.Helper()
		return ts.Metric(`coordinator_late_events_total{reason="` + reason + `"}`)
	}
	returned := metric("sub_returned")

	// Portal's stream: T1 at Auth, T2 at Proc, both returned, done with
	// both.
	servertest.Send(t, portal, simsidecar.Begin("T", 1),
		simsidecar.Call("T", 1, "auth", 2), simsidecar.Return("T", 2), simsidecar.Done("T", 1, "auth"),
		simsidecar.Call("T", 1, "proc", 3), simsidecar.Return("T", 3), simsidecar.Done("T", 1, "proc"))
	// Proc's stream, behind: T3 at Auth, made by T2 before it returned,
	// and T2's hint. The Call must not start T2 again; the hint is moot.
	hint := simsidecar.Done("T", 3, "auth")
	ack := servertest.SendAck(t, proc, simsidecar.Call("T", 3, "auth", 4), simsidecar.Return("T", 4), hint)
	if len(ack.Errors) != 0 || len(ack.Late) != 1 || ack.Late[0].Seq != hint.Seq ||
		ack.Late[0].Reason != pb.LateReason_LATE_REASON_SUB_RETURNED || ack.Late[0].TxnId != "T" {
		t.Fatalf("Proc's batch: errors %v, late %v; want the hint (seq %d) late, as its sub returned", ack.Errors, ack.Late, hint.Seq)
	}
	if got := metric("sub_returned"); got != returned+1 {
		t.Errorf(`late_events_total{reason="sub_returned"} = %v, want %v`, got, returned+1)
	}
	for _, svc := range []string{"auth", "proc", "db"} {
		if !free(svc) {
			t.Errorf("%s not free with every event arrived: %v", svc, ts.FreeREST(svc))
		}
	}

	// U: Proc's "done with Auth" comes before anything of U. It waits for
	// Proc's sub to start, and then makes Auth free while Proc still runs
	// (seed moment D).
	early := ts.Metric("coordinator_early_done_total")
	ack = servertest.SendAck(t, proc, simsidecar.Done("U", 3, "auth"))
	if len(ack.Errors) != 0 || len(ack.Late) != 0 {
		t.Fatalf("early DONE: errors %v, late %v; want neither", ack.Errors, ack.Late)
	}
	servertest.Send(t, portal, simsidecar.Begin("U", 1),
		simsidecar.Call("U", 1, "auth", 2), simsidecar.Return("U", 2), simsidecar.Done("U", 1, "auth"),
		simsidecar.Call("U", 1, "proc", 3), simsidecar.Done("U", 1, "proc"))
	if !free("auth") || free("proc") {
		t.Errorf("free(auth) %v free(proc) %v, want true false", free("auth"), free("proc"))
	}
	if got := ts.Metric("coordinator_early_done_total"); got != early+1 || ts.Metric("coordinator_early_done_applied_total") < 1 {
		t.Errorf("early_done_total %v (want %v), applied %v", got, early+1, ts.Metric("coordinator_early_done_applied_total"))
	}
	servertest.Send(t, portal, simsidecar.Return("U", 3), simsidecar.End("U"), simsidecar.End("T"))
}

// An implicit transaction whose Begin never comes is ended after
// ImplicitTimeout, so it cannot block b and c forever.
func TestImplicitTransactionExpires(t *testing.T) {
	ts := servertest.Start(t, "", func(c *server.Config) { c.Coordinator.ImplicitTimeout = 400 * time.Millisecond })
	b := ts.Sidecar("b-1", "b", "v1", "c")
	ts.Sidecar("c-1", "c", "v1")
	servertest.Send(t, b, simsidecar.Call("orphan", 2, "c", 3))
	servertest.Send(t, b, simsidecar.Call("adopted", 2, "c", 3))
	a := ts.Sidecar("a-1", "a", "v1", "b")
	servertest.Send(t, a, simsidecar.Begin("adopted", 1))
	if f := ts.FreeREST("c"); f.Blocking != 2 {
		t.Fatalf("c blocked by %d, want 2", f.Blocking)
	}
	servertest.Eventually(t, 10*time.Second, "the orphan to expire", func() bool { return txn(t, ts, "orphan") == nil })
	if txn(t, ts, "adopted") == nil {
		t.Fatal("a transaction whose Begin arrived was expired too")
	}
}

// A second stream registering the same instance takes the session over; the
// first stream is ended with Aborted and its events are refused.
func TestStreamTakeOver(t *testing.T) {
	ts := servertest.Start(t, "")
	reg := &pb.Register{InstanceId: "a-1", Service: "a", Version: "v1", HeartbeatInterval: durationpb.New(2 * time.Second)}
	first, r1 := ts.Register(reg)
	second, r2 := ts.Register(reg)
	if !r2.Resumed || r2.LeaseId != r1.LeaseId {
		t.Fatalf("second registration: %v, want the session resumed on lease %d", r2, r1.LeaseId)
	}
	select {
	case <-first.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the first stream was not ended")
	}
	if status.Code(first.Err()) != codes.Aborted {
		t.Fatalf("first stream ended with %v, want Aborted", first.Err())
	}
	servertest.Send(t, second, simsidecar.Begin("T", 1))
	ss, err := ts.Admin.ListSessions(context.Background(), &pb.ListSessionsRequest{})
	if err != nil || len(ss.Sessions) != 1 || !ss.Sessions[0].Connected || ss.Sessions[0].Roots != 1 {
		t.Fatalf("sessions = %v %v, want one connected session with one root", ss.GetSessions(), err)
	}
}

// Registering the same instance id with another version replaces the
// session: the old one's roots end and its lease is revoked.
func TestReRegisterWithNewVersionReplacesSession(t *testing.T) {
	ts := servertest.Start(t, "")
	old, r1 := ts.Register(&pb.Register{InstanceId: "a-1", Service: "a", Version: "v1"})
	servertest.Send(t, old, simsidecar.Begin("T", 1))
	_, r2 := ts.Register(&pb.Register{InstanceId: "a-1", Service: "a", Version: "v2"})
	if r2.Resumed || r2.LeaseId == r1.LeaseId {
		t.Fatalf("registration with v2: %v, want a new session on a new lease", r2)
	}
	if n := ts.Txns("").Total; n != 0 {
		t.Fatalf("%d live transactions of the replaced session, want 0", n)
	}
	ttl, err := ts.Store().TimeToLive(context.Background(), storage.LeaseID(r1.LeaseId))
	if !errors.Is(err, storage.ErrLeaseExpired) {
		t.Fatalf("old lease TTL = %v %v, want revoked", ttl, err)
	}
}

// Heartbeats answer at once with the lease's TTL.
func TestHeartbeat(t *testing.T) {
	ts := servertest.Start(t, "")
	sc, r := ts.Register(&pb.Register{InstanceId: "a-1", Service: "a", Version: "v1",
		HeartbeatInterval: durationpb.New(time.Second), AllowedMisses: 2})
	if got := r.Ttl.AsDuration(); got != 3*time.Second {
		t.Fatalf("lease TTL = %v, want interval x (misses + 1) = 3s", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 5 {
		hb, err := sc.Heartbeat(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if hb.Error != "" || (!hb.Pending && hb.Ttl.AsDuration() <= 0) {
			t.Fatalf("heartbeat ack %v", hb)
		}
	}
}

// A transaction that lives longer than the flush interval is written behind
// with its used versions on its root session's lease; one that begins and
// ends within the interval is never written.
func TestWriteBehindRecords(t *testing.T) {
	ts := servertest.Start(t, "", func(c *server.Config) { c.Coordinator.FlushInterval = 50 * time.Millisecond })
	a := ts.Sidecar("a-1", "a", "v1", "b")
	ts.Sidecar("b-1", "b", "v2")
	servertest.Send(t, a, simsidecar.Begin("short", 1), simsidecar.End("short"))
	servertest.Send(t, a, simsidecar.Begin("long", 1), simsidecar.Call("long", 1, "b", 2))
	key := ts.Leader().Keys().Txn("long")
	servertest.Eventually(t, 10*time.Second, "the long transaction's record", func() bool {
		resp, err := ts.Client().Get(context.Background(), key)
		return err == nil && len(resp.Kvs) == 1
	})
	resp, err := ts.Client().Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	var rec pb.TxnRecord
	if err := proto.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		t.Fatal(err)
	}
	want := &pb.TxnRecord{TxnId: "long", Owner: "a-1", Entry: "a", Used: []*pb.ServiceVersion{
		{Service: "a", Version: "v1"}, {Service: "b", Version: "v2"}}}
	if !proto.Equal(&rec, want) {
		t.Fatalf("record = %v, want %v", &rec, want)
	}
	ss, _ := ts.Admin.ListSessions(context.Background(), &pb.ListSessionsRequest{Service: "a"})
	var lease int64
	for _, s := range ss.Sessions {
		if s.InstanceId == "a-1" {
			lease = s.LeaseId
		}
	}
	if resp.Kvs[0].Lease != lease || lease == 0 {
		t.Fatalf("record lease %d, want a-1's lease %d", resp.Kvs[0].Lease, lease)
	}
	if st := ts.Leader().WriteBehindStats(); st.Ops != 1 {
		t.Fatalf("write-behind wrote %d ops, want 1 (the short transaction must not be written)", st.Ops)
	}
	servertest.Send(t, a, simsidecar.Return("long", 2), simsidecar.End("long"))
	servertest.Eventually(t, 10*time.Second, "the record to be deleted", func() bool {
		resp, err := ts.Client().Get(context.Background(), key)
		return err == nil && len(resp.Kvs) == 0
	})
}

// A call over an undeclared edge is learned, shown as learned in the graph,
// and counted.
func TestLearnedEdge(t *testing.T) {
	ts := servertest.Start(t, "")
	a := ts.Sidecar("a-1", "a", "v1") // declares no dependency
	ts.Sidecar("b-1", "b", "v1")
	servertest.Send(t, a, simsidecar.Begin("T", 1), simsidecar.Call("T", 1, "b", 2))
	g, err := ts.Admin.GetGraph(context.Background(), &pb.GetGraphRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Edges) != 1 || !g.Edges[0].Learned {
		t.Fatalf("edges = %v, want a->b learned", g.Edges)
	}
	if tx := txn(t, ts, "T"); tx == nil || !tx.LearnedEdge {
		t.Fatalf("transaction %v: want LearnedEdge", tx)
	}
	if got := ts.Metric("coordinator_learned_edges_total"); got != 1 {
		t.Fatalf("coordinator_learned_edges_total = %v, want 1", got)
	}
	// T called over an edge nobody declared: what else it may call is
	// unknown, so it blocks c too, which it never used.
	ts.Sidecar("c-1", "c", "v1")
	if f := ts.FreeREST("c"); f.Free || len(f.Blockers) != 1 || f.Blockers[0].TxnId != "T" || !f.Blockers[0].Legacy {
		t.Fatalf("freeness of c while T lives: %v", f)
	}
	servertest.Send(t, a, simsidecar.End("T"))
	servertest.Eventually(t, 5*time.Second, "c free after T ends", func() bool { return ts.FreeREST("c").Free })
}

// /health reports over capacity, and a lost etcd, with 503 and the reason;
// the replica here uses an external etcd (--etcd-endpoints).
func TestHealth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	etcd, err := embedetcd.Start(ctx, embedetcd.Config{DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	ts := servertest.Start(t, "", func(c *server.Config) {
		c.EtcdEndpoints = etcd.Endpoints()
		c.Coordinator.MaxLiveTxns = 10
		c.Coordinator.FlushInterval = time.Hour // records are written at shutdown only
	})
	var h coordinator.HealthReport
	if code := ts.REST("/health", &h); code != http.StatusOK || !h.Healthy {
		t.Fatalf("/health: HTTP %d %+v, want healthy", code, h)
	}
	// A lease long enough to outlive the test: this sidecar does not heartbeat.
	a, _ := ts.Register(&pb.Register{InstanceId: "a-1", Service: "a", Version: "v1", HeartbeatInterval: durationpb.New(time.Minute)})
	for i := range 9 {
		servertest.Send(t, a, simsidecar.Begin(servertest.TxnID(i), 1))
	}
	if code := ts.REST("/health", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("/health with 9 of 10 transactions: HTTP %d, want 503", code)
	}
	body := ts.RawREST("/health")
	if !strings.Contains(body, "capacity: 9 live transactions, limit 10") {
		t.Fatalf("/health body %s: want the capacity problem", body)
	}
	// With etcd gone, a shutdown cannot write what is pending (here every
	// record: the write-behind waits an hour): it must say so rather than
	// report a clean stop, whether the replica still leads then or has
	// stopped leading because its election lease could not be kept alive.
	servertest.Send(t, a, simsidecar.Begin("pending", 1))
	etcd.Close()
	body = ts.RawREST("/health")
	if !strings.Contains(body, `"etcd: `) {
		t.Fatalf("/health with etcd stopped: %s, want an etcd problem", body)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer scancel()
	if err := ts.StopWith(sctx); err == nil || !strings.Contains(err.Error(), "unwritten") {
		t.Fatalf("stop with etcd gone: %v, want an error naming the unwritten records", err)
	}
}

// A sidecar that re-registers with another heartbeat interval gets a new
// lease with the TTL it was told; one whose calls were only adopted keeps
// those transactions across its own reconnect.
func TestResumeKeepsLeaseTTLTrueAndAdoptedTransactions(t *testing.T) {
	ts := servertest.Start(t, "")
	reg := &pb.Register{InstanceId: "b-1", Service: "b", Version: "v1", Dependencies: []string{"c"},
		HeartbeatInterval: durationpb.New(time.Second), AllowedMisses: 1}
	b, r1 := ts.Register(reg)
	servertest.Send(t, b, simsidecar.Call("T", 2, "c", 3), simsidecar.Return("T", 3)) // T known only through b
	b.Close()
	_, r2 := ts.Register(reg) // same TTL: resumed
	if !r2.Resumed || r2.Ended != 0 {
		t.Fatalf("resume: %v, want resumed with nothing ended (T is not b's root)", r2)
	}
	if tx := txn(t, ts, "T"); tx == nil {
		t.Fatal("the adopted transaction was ended by b's resync")
	}
	reg.HeartbeatInterval = durationpb.New(5 * time.Second)
	_, r3 := ts.Register(reg)
	if r3.Resumed || r3.LeaseId == r1.LeaseId {
		t.Fatalf("register with a new interval: %v, want a new lease", r3)
	}
	// What is left of the lease just granted is about the TTL announced.
	ttl, err := ts.Store().TimeToLive(context.Background(), storage.LeaseID(r3.LeaseId))
	if want := r3.Ttl.AsDuration(); err != nil || ttl > want || ttl < want-3*time.Second {
		t.Fatalf("lease TTL left %v %v, announced %v: want about equal", ttl, err, want)
	}
}
