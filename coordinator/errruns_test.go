package coordinator_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Past the first 16 rejected events of a batch, consecutive events the
// engine rejects for one cause share one error for the run: a flood of
// ENDs of unknown transactions costs one error, not one each. An event
// applied in between, or another cause, ends a run; every rejected event
// is still counted, by seq, exactly once.
func TestRejectedRunsShareOneError(t *testing.T) {
	m := startMem(t)
	sc := m.Sidecar("flood-1", "flood", "v1")
	evs := ends("unknown", 100)
	evs = append(evs, simsidecar.Begin("real-1", 1)) // applied: ends the run
	evs = append(evs, ends("unknown-again", 10)...)
	evs = append(evs, simsidecar.Begin("real-1", 1)) // rejected, another cause
	ack, err := sc.Send(context.Background(), evs...)
	if err != nil {
		t.Fatal(err)
	}
	// seqs are the stream's own; find the batch's first.
	first := ack.ThroughSeq - uint64(len(evs)) + 1
	covered := map[uint64]int{}
	for _, e := range ack.Errors {
		through := max(e.ThroughSeq, e.Seq)
		for q := e.Seq; q <= through; q++ {
			covered[q]++
		}
	}
	for i, ev := range evs {
		q := first + uint64(i)
		want := 1
		if ev.Type == pb.EventType_EVENT_TYPE_BEGIN && i == 100 {
			want = 0
		}
		if covered[q] != want {
			t.Errorf("event %d (seq %d, %s %s): %d errors, want %d", i, q, ev.Type, ev.TxnId, covered[q], want)
		}
	}
	if len(ack.Errors) != 16+1+1+1 {
		for _, e := range ack.Errors {
			t.Logf("%d..%d %s %s", e.Seq, e.ThroughSeq, codes.Code(e.Code), e.Message)
		}
		t.Fatalf("%d errors, want 16 detailed, a run of 84, a run of 10 (after the applied BEGIN) and the second BEGIN's", len(ack.Errors))
	}
	run := ack.Errors[16]
	if run.Seq != first+16 || run.ThroughSeq != first+99 || run.TxnId != "" || codes.Code(run.Code) != codes.NotFound ||
		!strings.Contains(run.Message, "84 events") || !strings.Contains(run.Message, `the first of txn "unknown-16"`) {
		t.Errorf("run error %+v", run)
	}
	if again := ack.Errors[17]; again.Seq != first+101 || again.ThroughSeq != first+110 || !strings.Contains(again.Message, "10 events") {
		t.Errorf("second run %+v", again)
	}
	if b := ack.Errors[18]; b.ThroughSeq != 0 || b.TxnId != "real-1" || codes.Code(b.Code) != codes.AlreadyExists {
		t.Errorf("the second BEGIN's error %+v", b)
	}
	if r, _ := sc.Rejected(); r != 110+1 {
		t.Errorf("the sidecar counted %d rejected events, want 111", r)
	}
}

// BenchmarkJunkBatch sends batches of 1,000 ENDs of transactions that do
// not exist (bench/abuse's flood, within its rate) and waits for each Ack:
// the cost of rejecting them, in the coordinator and in the Ack (past the
// first 16, they share one error for the run). The rejected-events budget
// is set out of the way: this is the cost of the events it lets through.
func BenchmarkJunkBatch(b *testing.B) {
	m := startMem(b, func(c *coordinator.Config) { c.MaxRejectedPerSecond = 1e12 })
	sc := m.Sidecar("hostile-1", "hostile", "v1")
	b.ReportAllocs()
	for i := range b.N {
		if _, err := sc.Send(context.Background(), ends(fmt.Sprintf("junk-%d", i), 1000)...); err != nil {
			b.Fatal(err)
		}
	}
}
