package coordinator_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// quotaState is what a refused event must not change: the graph (services,
// edges, what each is used by) and every live transaction.
func quotaState(t *testing.T, ts *memServer) []proto.Message {
	t.Helper()
	g, err := ts.Admin.GetGraph(context.Background(), &pb.GetGraphRequest{})
	if err != nil {
		t.Fatal(err)
	}
	txns, err := ts.Admin.ListTransactions(context.Background(), &pb.ListTransactionsRequest{Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(txns.Transactions, func(a, b *pb.Transaction) int { return strings.Compare(a.TxnId, b.TxnId) })
	return []proto.Message{g, txns}
}

func withVersion(ev *pb.Event, v string) *pb.Event { ev.Version = v; return ev }

// Quota tests run on the memory store (memharness_test.go): they are about
// event application, not durability.

// Each quota, pushed by one session (h): the event past it is refused with
// ResourceExhausted naming the quota's flag and its limit, changes nothing,
// is counted under its label, and another session (o) goes on working.
func TestQuotas(t *testing.T) {
	T := servertest.TxnID
	cases := []struct {
		name   string
		label  string // coordinator_quota_refusals_total label
		flag   string // named in the refusal
		limit  int
		set    func(*coordinator.Config)
		hDeps  []string
		setup  []*pb.Event // from h, all accepted
		probe  []*pb.Event // from h, all refused
		others []*pb.Event // from o (declares b), all accepted afterwards
	}{{
		name: "live transactions per session", label: "session_live_txns", flag: "--max-live-txns-per-session", limit: 2,
		set:    func(c *coordinator.Config) { c.MaxLiveTxnsPerSession = 2 },
		hDeps:  []string{"b"},
		setup:  []*pb.Event{simsidecar.Begin(T(1), 1), simsidecar.Begin(T(2), 1)},
		probe:  []*pb.Event{simsidecar.Begin(T(3), 1), simsidecar.Call(T(4), 1, "b", 2)}, // a BEGIN, an implicit one
		others: []*pb.Event{simsidecar.Begin(T(10), 1), simsidecar.Begin(T(11), 1), simsidecar.End(T(10)), simsidecar.End(T(11))},
	}, {
		name: "live transactions in all", label: "live_txns", flag: "--max-live-txns", limit: 3,
		set:    func(c *coordinator.Config) { c.MaxLiveTxns = 3 },
		hDeps:  []string{"b"},
		setup:  []*pb.Event{simsidecar.Begin(T(1), 1), simsidecar.Begin(T(2), 1), simsidecar.Begin(T(3), 1)},
		probe:  []*pb.Event{simsidecar.Begin(T(4), 1), simsidecar.Call(T(5), 1, "b", 2)},
		others: []*pb.Event{simsidecar.Call(T(1), 7, "b", 8), simsidecar.Return(T(1), 8)}, // the running ones go on
	}, {
		name: "services a session introduces", label: "session_services", flag: "--max-new-services-per-session", limit: 2,
		set: func(c *coordinator.Config) { c.MaxNewServicesPerSession = 2 },
		setup: []*pb.Event{simsidecar.Begin(T(1), 1),
			simsidecar.Call(T(1), 1, "invented-1", 2), simsidecar.Call(T(1), 1, "invented-2", 3)},
		probe:  []*pb.Event{simsidecar.Call(T(1), 1, "invented-3", 4), simsidecar.Call(T(1), 1, "invented-4", 5)},
		others: []*pb.Event{simsidecar.Begin(T(10), 1), simsidecar.Call(T(10), 1, "o-new-1", 2), simsidecar.Call(T(10), 1, "o-new-2", 3)}, // its own two
	}, {
		name: "versions a session introduces", label: "session_versions", flag: "--max-new-versions-per-session", limit: 1,
		set:    func(c *coordinator.Config) { c.MaxNewVersionsPerSession = 1 },
		hDeps:  []string{"b"},
		setup:  []*pb.Event{simsidecar.Begin(T(1), 1), withVersion(simsidecar.Call(T(1), 1, "b", 2), "v7")},
		probe:  []*pb.Event{withVersion(simsidecar.Call(T(1), 1, "b", 3), "v8")},
		others: []*pb.Event{simsidecar.Begin(T(10), 1), withVersion(simsidecar.Call(T(10), 1, "b", 2), "v9")},
	}, {
		name: "learned edges per session", label: "session_learned_edges", flag: "--max-learned-edges-per-session", limit: 1,
		set:    func(c *coordinator.Config) { c.MaxLearnedEdgesPerSession = 1 },
		setup:  []*pb.Event{simsidecar.Begin(T(1), 1), simsidecar.Call(T(1), 1, "b", 2)},
		probe:  []*pb.Event{simsidecar.Call(T(1), 1, "c", 3)},
		others: []*pb.Event{simsidecar.Begin(T(10), 1), simsidecar.Call(T(10), 1, "c", 2)},
	}, {
		name: "learned edges in all", label: "learned_edges", flag: "--max-learned-edges", limit: 1,
		set:    func(c *coordinator.Config) { c.MaxLearnedEdges = 1 },
		setup:  []*pb.Event{simsidecar.Begin(T(1), 1), simsidecar.Call(T(1), 1, "b", 2)},
		probe:  []*pb.Event{simsidecar.Call(T(1), 1, "c", 3)},
		others: []*pb.Event{simsidecar.Begin(T(10), 1), simsidecar.Call(T(10), 1, "b", 2), simsidecar.Return(T(10), 2)}, // declared
	}, {
		name: "events per second per session", label: "session_event_rate", flag: "--max-events-per-second", limit: 0,
		set: func(c *coordinator.Config) {
			c.MaxEventsPerSecond = 0.001 // no token comes back during the test
			c.EventBurst = 3
		},
		hDeps:  []string{"b"},
		setup:  []*pb.Event{simsidecar.Begin(T(1), 1), simsidecar.Call(T(1), 1, "b", 2), simsidecar.Return(T(1), 2)},
		probe:  []*pb.Event{simsidecar.Call(T(1), 1, "b", 3), simsidecar.End(T(1))},
		others: []*pb.Event{simsidecar.Begin(T(10), 1), simsidecar.Call(T(10), 1, "b", 2), simsidecar.End(T(10))},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startMem(t, tc.set)
			// Live sidecars heartbeat: their 2 s leases must outlive the
			// test on a slow (race-instrumented) run.
			keepAlive(t, ts.Sidecar("b-1", "b", "v1"))
			keepAlive(t, ts.Sidecar("c-1", "c", "v1"))
			h := ts.Sidecar("h-1", "h", "v1", tc.hDeps...)
			keepAlive(t, h)
			o := ts.Sidecar("o-1", "o", "v1", "b")
			keepAlive(t, o)
			servertest.Send(t, h, tc.setup...)
			before := quotaState(t, ts)
			metric := fmt.Sprintf("coordinator_quota_refusals_total{quota=%q}", tc.label)
			refused0 := ts.Metric(metric)

			ack := servertest.SendAck(t, h, tc.probe...)
			if n := refusedEvents(ack, tc.probe); n != len(tc.probe) {
				t.Fatalf("%d of %d probe events refused: %v", n, len(tc.probe), ack.Errors)
			}
			for _, e := range ack.Errors {
				if codes.Code(e.Code) != codes.ResourceExhausted {
					t.Errorf("seq %d: code %v, want ResourceExhausted: %s", e.Seq, codes.Code(e.Code), e.Message)
				}
				if !strings.Contains(e.Message, tc.flag+")") || !strings.Contains(e.Message, fmt.Sprintf("limit is %d ", tc.limit)) {
					t.Errorf("seq %d: message %q does not name %s and its limit %d", e.Seq, e.Message, tc.flag, tc.limit)
				}
			}
			if after := quotaState(t, ts); !proto.Equal(before[0], after[0]) || !proto.Equal(before[1], after[1]) {
				t.Errorf("refused events changed the state:\nbefore %v\nafter  %v", before, after)
			}
			if got := ts.Metric(metric) - refused0; got != float64(len(tc.probe)) {
				t.Errorf("%s rose by %v, want %d", metric, got, len(tc.probe))
			}
			servertest.Send(t, o, tc.others...) // fails on any refusal
		})
	}
}

// refusedEvents counts the events of evs that ack's errors are about: an
// error with a through_seq is about each event from its seq through it.
func refusedEvents(ack *pb.Ack, evs []*pb.Event) int {
	n := 0
	for _, ev := range evs {
		for _, e := range ack.Errors {
			if ev.Seq == e.Seq || (ev.Seq > e.Seq && ev.Seq <= e.ThroughSeq) {
				n++
				break
			}
		}
	}
	return n
}

// Events past the session's rate are refused as a run, without being
// looked at: one error in the Ack (from the first refused seq through the
// last) rather than one per event, each of them counted in the metrics, and
// a waiting CALL among them still hears back.
func TestEventRateRefusesARunWithOneError(t *testing.T) {
	T := servertest.TxnID
	ts := startMem(t, func(c *coordinator.Config) {
		c.MaxEventsPerSecond = 0.001 // no token comes back during the test
		c.EventBurst = 3
	})
	keepAlive(t, ts.Sidecar("b-1", "b", "v1"))
	h := ts.Sidecar("h-1", "h", "v1", "b")
	keepAlive(t, h)
	o := ts.Sidecar("o-1", "o", "v1", "b")
	keepAlive(t, o)
	refused0 := ts.Metric(`coordinator_quota_refusals_total{quota="session_event_rate"}`)
	errors0 := ts.Metric(`coordinator_event_errors_total{code="ResourceExhausted"}`)

	evs := []*pb.Event{simsidecar.Begin(T(1), 1), simsidecar.Begin(T(2), 1), simsidecar.Begin(T(3), 1)}
	for i := range 100 {
		evs = append(evs, simsidecar.End(fmt.Sprintf("unknown-%d", i)))
	}
	ack := servertest.SendAck(t, h, evs...)
	if len(ack.Errors) != 1 {
		t.Fatalf("%d errors for 100 events past the rate, want 1: %v", len(ack.Errors), ack.Errors[:min(3, len(ack.Errors))])
	}
	e := ack.Errors[0]
	if e.Seq != evs[3].Seq || e.ThroughSeq != evs[len(evs)-1].Seq || e.TxnId != "" {
		t.Errorf("error is about seq %d through %d (txn %q), want %d through %d", e.Seq, e.ThroughSeq, e.TxnId, evs[3].Seq, evs[len(evs)-1].Seq)
	}
	if codes.Code(e.Code) != codes.ResourceExhausted || !strings.Contains(e.Message, "--max-events-per-second") {
		t.Errorf("error %v %q, want ResourceExhausted naming --max-events-per-second", codes.Code(e.Code), e.Message)
	}
	if n := ts.Leader().Live(); n != 3 {
		t.Errorf("%d live transactions, want the 3 admitted BEGINs", n)
	}
	if got := ts.Metric(`coordinator_quota_refusals_total{quota="session_event_rate"}`) - refused0; got != 100 {
		t.Errorf("session_event_rate refusals rose by %v, want 100", got)
	}
	if got := ts.Metric(`coordinator_event_errors_total{code="ResourceExhausted"}`) - errors0; got != 100 {
		t.Errorf("ResourceExhausted event errors rose by %v, want 100", got)
	}

	// A lone waiting CALL past the rate: its error names it, and the call
	// is answered.
	d, a, err := h.SendWait(simsidecar.Call(T(1), 1, "b", 2))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case dec := <-d:
		if !strings.Contains(dec.GetError(), "--max-events-per-second") {
			t.Errorf("decision of the refused CALL: %v, want the rate refusal", dec)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no decision for a waiting CALL past the rate")
	}
	if ack := <-a; len(ack.GetErrors()) != 1 || ack.Errors[0].ThroughSeq != 0 || ack.Errors[0].TxnId != T(1) {
		t.Errorf("ack of the refused CALL: %v, want one error about it alone", ack)
	}
	servertest.Send(t, o, simsidecar.Begin(T(10), 1), simsidecar.Call(T(10), 1, "b", 2), simsidecar.End(T(10)))
}

// A Register whose live roots (each a transaction the session will own)
// are more than the per-session quota is refused whole: ResourceExhausted
// naming the quota, no session, no transaction.
func TestRegisterPastLiveQuotaIsRefused(t *testing.T) {
	ts := startMem(t, func(c *coordinator.Config) { c.MaxLiveTxnsPerSession = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reg := &pb.Register{InstanceId: "h-1", Service: "h", Version: "v1", Address: "127.0.0.1:1"}
	for i := range 3 {
		reg.LiveRoots = append(reg.LiveRoots, &pb.LiveRoot{TxnId: servertest.TxnID(i), SubId: 1})
	}
	_, _, err := simsidecar.Connect(ctx, ts.Conn, reg)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(fmt.Sprint(err), "--max-live-txns-per-session") {
		t.Fatalf("register with 3 live roots: %v, want ResourceExhausted naming --max-live-txns-per-session", err)
	}
	if n := ts.Leader().Live(); n != 0 {
		t.Fatalf("%d live transactions after the refusal, want 0", n)
	}
	if got := ts.Metric(`coordinator_quota_refusals_total{quota="session_live_txns"}`); got != 1 {
		t.Fatalf("refusals = %v, want 1", got)
	}
	reg.LiveRoots = reg.LiveRoots[:2]
	if _, _, err := simsidecar.Connect(ctx, ts.Conn, reg); err != nil {
		t.Fatalf("register with 2 live roots: %v", err)
	}
}

// With the defaults, a session that CALLs 30,000 invented service names
// is stopped after DefaultMaxNewServicesPerSession of them: the rest are
// refused and the graph does not grow (issue 13's probe).
func TestInventedServicesStoppedEarlyByDefault(t *testing.T) {
	ts := startMem(t)
	h := ts.Sidecar("h-1", "h", "v1")
	keepAlive(t, h) // its 2 s lease must outlive 30 batches on a race-instrumented run
	services0 := ts.Metric("coordinator_services")
	servertest.Send(t, h, simsidecar.Begin("T", 1))
	const n, batch = 30000, 1000
	refused := 0
	for i := 0; i < n; i += batch {
		evs := make([]*pb.Event, 0, batch)
		for j := i; j < i+batch; j++ {
			evs = append(evs, simsidecar.Call("T", 1, fmt.Sprintf("invented-%d", j), uint64(j+2)))
		}
		for _, e := range servertest.SendAck(t, h, evs...).Errors {
			if codes.Code(e.Code) != codes.ResourceExhausted {
				t.Fatalf("seq %d: %s", e.Seq, e.Message)
			}
			refused++
		}
	}
	limit := coordinator.DefaultMaxNewServicesPerSession
	if refused != n-limit {
		t.Fatalf("%d of %d CALLs refused, want %d", refused, n, n-limit)
	}
	if got := ts.Metric("coordinator_services") - services0; got != float64(limit) {
		t.Fatalf("%v services added, want %d", got, limit)
	}
}
