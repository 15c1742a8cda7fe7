package coordinator_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// refusedBy counts the events of ack refused with ResourceExhausted naming
// flag, and those rejected for any other reason.
func refusedBy(ack *pb.Ack, flag string) (refused, other int) {
	for _, e := range ack.GetErrors() {
		n := int(max(e.ThroughSeq, e.Seq) - e.Seq + 1)
		if codes.Code(e.Code) == codes.ResourceExhausted && strings.Contains(e.Message, flag) {
			refused += n
		} else {
			other += n
		}
	}
	return refused, other
}

// A session whose events the engine keeps rejecting runs into debt on its
// rejected-events budget: its stream is not read until the debt is repaid
// (capped by the pause bound), and a batch read while it is still in debt
// is refused whole with ResourceExhausted naming the budget's flag, none of
// it applied (its BEGIN does not make a live transaction). Another session
// is served meanwhile; once the debt is repaid the session's events are
// applied again.
func TestRejectedEventsOverBudgetAreThrottled(t *testing.T) {
	const flag = "--max-rejected-events-per-second"
	ts := startMem(t, func(c *coordinator.Config) {
		c.MaxRejectedPerSecond = 20
		c.RejectedBurst = 40
		c.MinSessionTTL = 20 * time.Second // a pause is at most a quarter of it
	}, coordinator.WithRatePauseMax(300*time.Millisecond))
	h := ts.Sidecar("h-1", "h", "v1")
	keepAlive(t, h)
	o := ts.Sidecar("o-1", "o", "v1")
	keepAlive(t, o)
	refused0 := ts.Metric(`coordinator_quota_refusals_total{quota="session_rejected_events"}`)
	live0 := ts.Metric(`coordinator_live_transactions`)

	// 80 ENDs of unknown transactions: all applied and rejected (the
	// budget is checked before a batch, drawn on after it): 40 in debt.
	if r, other := refusedBy(servertest.SendAck(t, h, ends("junk", 80)...), flag); r != 0 || other != 80 {
		t.Fatalf("first batch: %d refused by the budget, %d rejected; want 0 and 80", r, other)
	}
	sent := time.Now()
	next, err := h.SendAsync(simsidecar.Begin("h-txn", 1))
	if err != nil {
		t.Fatal(err)
	}
	if r, other := refusedBy(servertest.SendAck(t, o, simsidecar.Begin("o-txn", 1)), flag); r+other != 0 {
		t.Fatalf("o's BEGIN refused (%d) or rejected (%d): its budget is its own", r, other)
	}
	var ack *pb.Ack
	select {
	case ack = <-next:
	case <-time.After(30 * time.Second):
		t.Fatal("h's batch in debt not acknowledged")
	}
	if d := time.Since(sent); d < 250*time.Millisecond {
		t.Errorf("h's next batch acknowledged %v after it was sent, want it read after a pause (300ms)", d)
	}
	if r, other := refusedBy(ack, flag); r != 1 || other != 0 {
		t.Fatalf("h's BEGIN while in debt: %d refused by the budget, %d other errors; want 1 and 0: %v", r, other, ack.GetErrors())
	}
	if got := ts.Metric(`coordinator_quota_refusals_total{quota="session_rejected_events"}`) - refused0; got != 1 {
		t.Errorf("session_rejected_events refusals rose by %v, want 1", got)
	}
	if got := ts.Metric(`coordinator_live_transactions`) - live0; got != 1 {
		t.Errorf("live transactions rose by %v, want 1 (o's; h's refused BEGIN applied nothing)", got)
	}
	// Repaid after 2 s at 20/s: applied again.
	time.Sleep(2100 * time.Millisecond)
	if r, other := refusedBy(servertest.SendAck(t, h, simsidecar.Begin("h-txn-2", 1)), flag); r+other != 0 {
		t.Fatalf("h's BEGIN after the debt was repaid: %d refused, %d rejected; want it applied", r, other)
	}
}

// Events another quota refuses do not draw on the rejected-events budget
// (that quota bounds them): a session past its live transactions, refused
// many times over the budget, still has its valid events applied.
func TestQuotaRefusalsDoNotDrawOnTheRejectedBudget(t *testing.T) {
	ts := startMem(t, func(c *coordinator.Config) {
		c.MaxLiveTxnsPerSession = 1
		c.MaxRejectedPerSecond = 0.001 // nothing comes back during the test
		c.RejectedBurst = 5
	})
	h := ts.Sidecar("h-1", "h", "v1")
	keepAlive(t, h)
	var begins []*pb.Event
	for i := range 50 {
		begins = append(begins, simsidecar.Begin(fmt.Sprintf("t%d", i), 1))
	}
	if r, other := refusedBy(servertest.SendAck(t, h, begins...), "--max-live-txns-per-session"); r != 49 || other != 0 {
		t.Fatalf("50 BEGINs past a quota of 1: %d refused by it, %d other; want 49 and 0", r, other)
	}
	if r, other := refusedBy(servertest.SendAck(t, h, simsidecar.End("t0")), "--max-rejected-events-per-second"); r+other != 0 {
		t.Fatalf("END of the live transaction after the quota refusals: %d refused by the rejected budget, %d other; want it applied", r, other)
	}
	if r, other := refusedBy(servertest.SendAck(t, h, ends("junk", 5)...), "--max-rejected-events-per-second"); r != 0 || other != 5 {
		t.Fatalf("5 ENDs of unknown transactions (the whole burst): %d refused by the budget, %d rejected; want 0 and 5", r, other)
	}
}

// A session throttled for its rejected events keeps its lease: its
// heartbeats wait behind the batches it queued, each of which may bring a
// pause, so the stream is paused only while its last heartbeat is recent
// and read on otherwise. A session flooding junk for three TTLs (2 s
// each), in debt all along, is still registered and answered at the end.
func TestThrottledSessionKeepsItsLease(t *testing.T) {
	ts := startMem(t, func(c *coordinator.Config) {
		c.MaxRejectedPerSecond = 0.001 // in debt for the whole test
		c.RejectedBurst = 1
	}, coordinator.WithRatePauseMax(time.Minute)) // a pause is a quarter of the TTL: 500 ms
	h := ts.Sidecar("h-1", "h", "v1")
	stopBeats := keepAlive(t, h)
	var stop atomic.Bool
	var refused atomic.Int64
	go func() {
		for i := 0; !stop.Load(); i++ {
			w, err := h.SendAsync(ends(fmt.Sprintf("junk-%d", i), 20)...)
			if err != nil {
				return
			}
			go func() {
				if ack, ok := <-w; ok {
					refused.Add(int64(simsidecar.RefusedFor(ack, "--max-rejected-events-per-second")))
				}
			}()
		}
	}()
	select {
	case <-h.Done():
		t.Fatalf("the throttled session's stream ended: %v", h.Err())
	case <-time.After(6 * time.Second):
	}
	stop.Store(true)
	stopBeats()
	if refused.Load() == 0 {
		t.Fatal("no batch refused for the rejected-events budget: the session was not throttled")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ack, err := h.Heartbeat(ctx)
	if err != nil || ack.GetError() != "" {
		t.Fatalf("heartbeat of the throttled session after three TTLs: %v %q, want it answered (its lease kept)", err, ack.GetError())
	}
}
