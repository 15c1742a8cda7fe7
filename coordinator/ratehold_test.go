package coordinator_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// ends is n ENDs of transactions nobody began: events that change nothing.
func ends(prefix string, n int) []*pb.Event {
	evs := make([]*pb.Event, n)
	for i := range evs {
		evs[i] = simsidecar.End(fmt.Sprintf("%s-%d", prefix, i))
	}
	return evs
}

// A session whose batch was refused for its rate is not read until its
// bucket has refilled: the batch it sends next is not acknowledged before
// then (another session's batch, sent after it, is), and when it is read
// it finds tokens for all its events, which a stream read at once would
// not (20 events/s: the next batch comes within milliseconds).
func TestEventRateOverPausesReading(t *testing.T) {
	ts := startMem(t, func(c *coordinator.Config) {
		c.MaxEventsPerSecond = 20
		c.EventBurst = 40
		c.MinSessionTTL = 20 * time.Second // a pause is at most a quarter of it
	}, coordinator.WithRatePauseMax(time.Minute)) // paused until full: 2 s
	h := ts.Sidecar("h-1", "h", "v1")
	keepAlive(t, h)
	o := ts.Sidecar("o-1", "o", "v1")
	keepAlive(t, o)
	refused0 := ts.Metric(`coordinator_quota_refusals_total{quota="session_event_rate"}`)

	first := ends("first", 50)
	if n := simsidecar.RateRefused(servertest.SendAck(t, h, first...)); n < 10 {
		t.Fatalf("%d of 50 events refused past a burst of 40, want at least 10", n)
	}
	second, err := h.SendAsync(ends("second", 20)...)
	if err != nil {
		t.Fatal(err)
	}
	if n := simsidecar.RateRefused(servertest.SendAck(t, o, ends("other", 20)...)); n != 0 { // o has its own bucket, and is read
		t.Fatalf("%d of o's events refused for the rate, want none", n)
	}
	select {
	case ack := <-second:
		t.Fatalf("h's next batch was acknowledged before its bucket refilled (o was served first?): %v", ack.GetErrors())
	default:
	}
	var ack *pb.Ack
	select {
	case ack = <-second:
	case <-time.After(30 * time.Second):
		t.Fatal("h's next batch not acknowledged after its pause")
	}
	if n := simsidecar.RateRefused(ack); n != 0 {
		t.Errorf("%d events of h's batch after its pause refused for the rate, want none: %v", n, ack.GetErrors())
	}
	if got := ts.Metric(`coordinator_quota_refusals_total{quota="session_event_rate"}`) - refused0; got < 10 || got > 50 {
		t.Errorf("session_event_rate refusals rose by %v, want the first batch's", got)
	}
}

// A session that stays over its rate (every batch refused, a pause
// between them) for OverRateCloseAfter has its stream closed with
// ResourceExhausted naming the rate, after the Ack of its last batch;
// another session goes on; the session may register again.
func TestEventRateOverTooLongClosesTheStream(t *testing.T) {
	ts := startMem(t, func(c *coordinator.Config) {
		c.MaxEventsPerSecond = 0.001 // no token comes back during the test
		c.EventBurst = 1
		c.OverRateCloseAfter = 300 * time.Millisecond
	}, coordinator.WithRatePauseMax(50*time.Millisecond))
	h := ts.Sidecar("h-1", "h", "v1")
	o := ts.Sidecar("o-1", "o", "v1")
	keepAlive(t, o)

	start := time.Now()
	refused, batches := 0, 0
	for ; batches < 1000; batches++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ack, err := h.Send(ctx, ends(fmt.Sprintf("b%d", batches), 5)...)
		cancel()
		if err != nil {
			break
		}
		refused += simsidecar.RateRefused(ack)
	}
	<-h.Done()
	err := h.Err()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-events-per-second") ||
		!strings.Contains(err.Error(), "stream closed") {
		t.Fatalf("stream of a session over its rate ended with %v, want ResourceExhausted naming --max-events-per-second", err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("stream closed %v after the session went over its rate, want at least OverRateCloseAfter (300ms)", d)
	}
	if batches < 2 || refused < 5*batches-1 {
		t.Errorf("%d batches acknowledged with %d events refused before the close, want each refused (one token)", batches, refused)
	}
	if n := simsidecar.RateRefused(servertest.SendAck(t, o, ends("other", 1)...)); n != 0 { // its own token
		t.Errorf("o's event refused for the rate: its bucket is its own")
	}
	ts.Sidecar("h-1", "h", "v1") // registers again (fails the test if not)
}
