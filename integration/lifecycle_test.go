package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// TestLeaseExpiryRemovesTransactions kills a sidecar (its stream closes and
// it stops heartbeating): its session keeps its lease until the TTL, then
// its root transactions are removed. A sidecar that keeps heartbeating past
// the same TTL keeps its transactions.
func TestLeaseExpiryRemovesTransactions(t *testing.T) {
	ts := servertest.Start(t, "")
	dead := ts.Sidecar("dead-1", "portal", "v1", "auth")
	alive := ts.Sidecar("alive-1", "proc", "v1", "auth")
	ts.Sidecar("auth-1", "auth", "v1")
	servertest.Send(t, dead, simsidecar.Begin("dead-t", 1), simsidecar.Call("dead-t", 1, "auth", 2))
	servertest.Send(t, alive, simsidecar.Begin("alive-t", 1), simsidecar.Call("alive-t", 1, "auth", 2))
	if f := ts.FreeREST("auth"); f.Blocking != 2 {
		t.Fatalf("auth blocked by %d, want 2", f.Blocking)
	}

	killedAt := time.Now()
	dead.Close()
	// The stream is gone but the lease is not: the transaction stays for now.
	if got := ts.Txns("portal").Total; got != 1 {
		t.Fatalf("right after the stream closed: %d transactions of portal, want 1", got)
	}
	hbCtx, stopHB := context.WithCancel(context.Background())
	defer stopHB()
	go func() {
		for hbCtx.Err() == nil {
			if _, err := alive.Heartbeat(hbCtx); err != nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	servertest.Eventually(t, 20*time.Second, "the dead sidecar's transaction to go", func() bool {
		return ts.Txns("portal").Total == 0
	})
	if waited := time.Since(killedAt); waited < time.Second {
		t.Fatalf("transaction removed %v after the kill: before the 2 s lease could expire", waited)
	}
	if f := ts.FreeREST("auth"); f.Blocking != 1 || f.Blockers[0].TxnId != "alive-t" {
		t.Fatalf("auth blockers after expiry = %v, want only alive-t", f.Blockers)
	}
	ss, err := ts.Admin.ListSessions(context.Background(), &pb.ListSessionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ss.Sessions {
		if s.InstanceId == "dead-1" {
			t.Fatalf("expired session dead-1 still listed")
		}
	}
	// The record went with the lease.
	resp, err := ts.Client().Get(context.Background(), ts.Leader().Keys().Txn("dead-t"))
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("record of dead-t: %v %v, want gone", resp.Kvs, err)
	}
}

// TestReconnectResumesSession: a sidecar that reconnects before its lease
// expires resumes the session; roots it no longer reports ended while it was
// away, roots the coordinator did not know come back as legacy.
func TestReconnectResumesSession(t *testing.T) {
	ts := servertest.Start(t, "")
	reg := &pb.Register{InstanceId: "portal-1", Service: "portal", Version: "v1", Dependencies: []string{"auth"},
		HeartbeatInterval: durationpb.New(2 * time.Second), AllowedMisses: 2}
	sc, first := ts.Register(reg)
	servertest.Send(t, sc, simsidecar.Begin("keep", 1), simsidecar.Begin("gone", 1))
	sc.Close()
	reg.LiveRoots = []*pb.LiveRoot{{TxnId: "keep", SubId: 1}, {TxnId: "unseen", SubId: 7}}
	_, again := ts.Register(reg)
	if !again.Resumed || again.LeaseId != first.LeaseId {
		t.Fatalf("re-register: resumed=%v lease %d (first %d), want the same lease resumed", again.Resumed, again.LeaseId, first.LeaseId)
	}
	if again.Resynced != 2 || again.Ended != 1 {
		t.Fatalf("resync: resynced=%d ended=%d, want 2 and 1", again.Resynced, again.Ended)
	}
	got := map[string]*pb.Transaction{}
	for _, tx := range ts.Txns("").Transactions {
		got[tx.TxnId] = tx
	}
	if len(got) != 2 || got["keep"] == nil || got["keep"].Legacy || got["unseen"] == nil || !got["unseen"].Legacy {
		t.Fatalf("after resync: %v, want keep (precise) and unseen (legacy)", got)
	}
}

// TestRestartRestoresState stops the coordinator cleanly and starts it again
// on the same data dir: services, still-leased sessions and transaction
// records come back (the transactions as legacy, since the new process did
// not see them start).
func TestRestartRestoresState(t *testing.T) {
	dir := t.TempDir()
	ts := servertest.Start(t, dir)
	reg := &pb.Register{InstanceId: "portal-1", Service: "portal", Version: "v1", Dependencies: []string{"auth"},
		HeartbeatInterval: durationpb.New(5 * time.Second), AllowedMisses: 2}
	sc, _ := ts.Register(reg)
	ts.Sidecar("auth-1", "auth", "v1")
	servertest.Send(t, sc, simsidecar.Begin("t-1", 1), simsidecar.Call("t-1", 1, "auth", 2), simsidecar.Return("t-1", 2))
	servertest.Send(t, sc, simsidecar.Begin("t-2", 1))
	servertest.Send(t, sc, simsidecar.Begin("t-3", 1), simsidecar.End("t-3"))
	sc.Close()
	ts.Stop()

	ts2 := servertest.Start(t, dir)
	g, err := ts2.Admin.GetGraph(context.Background(), &pb.GetGraphRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Edges) != 1 || g.Edges[0].From != "portal" || g.Edges[0].To != "auth" || g.Edges[0].Learned {
		t.Fatalf("restored edges = %v, want the declared portal->auth", g.Edges)
	}
	ss, err := ts2.Admin.ListSessions(context.Background(), &pb.ListSessionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ss.Sessions) != 2 {
		t.Fatalf("restored sessions = %v, want portal-1 and auth-1", ss.Sessions)
	}
	for _, s := range ss.Sessions {
		if s.Connected {
			t.Fatalf("restored session %s is connected before any sidecar reconnected", s.InstanceId)
		}
	}
	txs := ts2.Txns("")
	if txs.Total != 2 {
		t.Fatalf("restored %d transactions, want t-1 and t-2 (t-3 ended)", txs.Total)
	}
	for _, tx := range txs.Transactions {
		if !tx.Legacy || tx.Owner != "portal-1" {
			t.Fatalf("restored %v: want legacy, owned by portal-1", tx)
		}
		if tx.TxnId == "t-1" && len(tx.Used) != 2 {
			t.Fatalf("restored t-1 used %v, want portal@v1 and auth@v1", tx.Used)
		}
	}
	if f := ts2.FreeREST("auth"); f.Free || f.Blocking != 2 {
		t.Fatalf("auth after restart: free=%v blocking=%d, want blocked by both legacy transactions", f.Free, f.Blocking)
	}
	// The sidecar comes back and says only t-2 still runs.
	reg.LiveRoots = []*pb.LiveRoot{{TxnId: "t-2", SubId: 1}}
	_, r := ts2.Register(reg)
	if !r.Resumed || r.Ended != 1 || r.Resynced != 1 {
		t.Fatalf("re-register after restart: %v, want resumed, 1 resynced, 1 ended", r)
	}
	if got := ts2.Txns("").Total; got != 1 {
		t.Fatalf("%d transactions after resync, want 1", got)
	}
}

// TestBadInput sends invalid events and registrations: each gets a clear
// error and changes nothing.
func TestBadInput(t *testing.T) {
	ts := servertest.Start(t, "")
	portal := ts.Sidecar("portal-1", "portal", "v1", "auth")
	ts.Sidecar("auth-1", "auth", "v1")
	servertest.Send(t, portal, simsidecar.Begin("good", 1), simsidecar.Call("good", 1, "auth", 2))
	before := ts.Txns("")

	long := strings.Repeat("a", 300)
	for _, tc := range []struct {
		name string
		ev   *pb.Event
		code codes.Code
		msg  string
	}{
		{"empty txn id", simsidecar.Begin("", 1), codes.InvalidArgument, "txn_id is empty"},
		{"oversized txn id", simsidecar.Begin(long, 1), codes.InvalidArgument, "more than 256"},
		{"txn id with a space", simsidecar.Begin("a b", 1), codes.InvalidArgument, "printable"},
		{"zero sub id", simsidecar.Begin("x", 0), codes.InvalidArgument, "sub_id is 0"},
		{"zero caller", simsidecar.Call("good", 0, "auth", 9), codes.InvalidArgument, "caller_sub_id is 0"},
		{"bad callee name", simsidecar.Call("good", 1, "a/b", 9), codes.InvalidArgument, "service"},
		{"sub equal to caller", simsidecar.Call("good", 1, "ghost", 1), codes.InvalidArgument, "equals caller_sub_id"},
		{"bad version", &pb.Event{Type: pb.EventType_EVENT_TYPE_CALL, TxnId: "good", CallerSubId: 1, Service: "ghost2", SubId: 9, Version: "bad version!"}, codes.InvalidArgument, "version"},
		{"return without call", simsidecar.Return("good", 42), codes.NotFound, "RETURN"},
		{"return of unknown txn", simsidecar.Return("nope", 2), codes.NotFound, "nope"},
		{"end of unknown txn", simsidecar.End("nope"), codes.NotFound, "END"},
		{"duplicate begin", simsidecar.Begin("good", 1), codes.AlreadyExists, "BEGIN"},
		{"duplicate sub", simsidecar.Call("good", 1, "auth", 2), codes.AlreadyExists, "CALL"},
		{"done for unknown service", simsidecar.Done("good", 1, "nosuch"), codes.InvalidArgument, "unknown service"},
		{"unknown type", &pb.Event{Type: 99, TxnId: "good", SubId: 1}, codes.InvalidArgument, "unknown event type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ack := servertest.SendAck(t, portal, tc.ev)
			if len(ack.Errors) != 1 {
				t.Fatalf("errors = %v, want exactly one", ack.Errors)
			}
			e := ack.Errors[0]
			if codes.Code(e.Code) != tc.code || !strings.Contains(e.Message, tc.msg) || e.Seq != tc.ev.Seq {
				t.Fatalf("error = seq %d %v %q, want seq %d %v containing %q", e.Seq, codes.Code(e.Code), e.Message, tc.ev.Seq, tc.code, tc.msg)
			}
		})
	}
	// A batch with one bad event in the middle applies the others.
	ack := servertest.SendAck(t, portal, simsidecar.Begin("b-1", 1), simsidecar.End("nope"), simsidecar.Begin("b-2", 1))
	if len(ack.Errors) != 1 || ack.Errors[0].Seq != ack.ThroughSeq-1 {
		t.Fatalf("mixed batch errors = %v, want only the middle event", ack.Errors)
	}
	for _, ghost := range []string{"ghost", "ghost2"} {
		if code := ts.REST("/v1/services/"+ghost+"/freeness", nil); code != 404 {
			t.Fatalf("a rejected event created service %s (freeness HTTP %d, want 404)", ghost, code)
		}
	}
	after := ts.Txns("")
	if after.Total != before.Total+2 {
		t.Fatalf("%d transactions after bad input, want %d (+b-1, b-2)", after.Total, before.Total+2)
	}

	// Events on a stream that never registered are refused per event.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := pb.NewSidecarServiceClient(ts.Conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ev := simsidecar.Begin("unreg", 1)
	ev.Seq = 1
	if err := raw.Send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Events{Events: &pb.EventBatch{Events: []*pb.Event{ev}}}}); err != nil {
		t.Fatal(err)
	}
	m, err := raw.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if errs := m.GetAck().GetErrors(); len(errs) != 1 || codes.Code(errs[0].Code) != codes.FailedPrecondition ||
		!strings.Contains(errs[0].Message, "Register first") {
		t.Fatalf("unregistered stream: %v, want one FailedPrecondition asking to register", m)
	}
	if ts.Txns("").Total != after.Total {
		t.Fatalf("unregistered events changed the state")
	}

	// Invalid registrations end the stream with InvalidArgument.
	for _, reg := range []*pb.Register{
		{InstanceId: "", Service: "s", Version: "v1"},
		{InstanceId: "i", Service: "", Version: "v1"},
		{InstanceId: "i", Service: "s", Version: ""},
		{InstanceId: "i", Service: "s", Version: "v1", Dependencies: []string{"a/b"}},
		{InstanceId: "i", Service: "s", Version: "v1", HeartbeatInterval: durationpb.New(time.Millisecond)},
		{InstanceId: "i", Service: "s", Version: "v1", LiveRoots: []*pb.LiveRoot{{TxnId: "", SubId: 1}}},
	} {
		_, _, err := simsidecar.Connect(ctx, ts.Conn, reg)
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("register %v: %v, want InvalidArgument", reg, err)
		}
	}
	ss, err := ts.Admin.ListSessions(ctx, &pb.ListSessionsRequest{})
	if err != nil || len(ss.Sessions) != 2 {
		t.Fatalf("sessions after bad registrations: %v %v, want the 2 good ones", ss.GetSessions(), err)
	}
}
