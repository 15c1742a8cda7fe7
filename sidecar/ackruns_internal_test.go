package sidecar

import (
	"log/slog"
	"testing"

	"google.golang.org/grpc/codes"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// An Ack's error about a run of events (EventError.through_seq) counts
// each event of the run once: as duplicates when every event of it was
// resent and the coordinator had them already (NotFound, AlreadyExists),
// as rejected otherwise.
func TestAckRunErrorsCountEachEvent(t *testing.T) {
	c := &Client{lg: slog.New(slog.DiscardHandler)}
	for seq := uint64(1); seq <= 40; seq++ {
		c.inflight = append(c.inflight, &pb.Event{Seq: seq})
	}
	c.resentThrough = 20
	c.onAck(&pb.Ack{ThroughSeq: 40, Errors: []*pb.EventError{
		{Seq: 1, Code: int32(codes.NotFound), TxnId: "t1"},            // resent: a duplicate
		{Seq: 2, ThroughSeq: 20, Code: int32(codes.NotFound)},         // resent run: 19 duplicates
		{Seq: 21, ThroughSeq: 30, Code: int32(codes.NotFound)},        // new: 10 rejected
		{Seq: 31, ThroughSeq: 35, Code: int32(codes.InvalidArgument)}, // new: 5 rejected
	}})
	st := c.Stats()
	if st.Duplicates != 20 || st.Rejected != 15 || st.Acked != 40 || st.Queued != 0 {
		t.Fatalf("stats %+v, want 20 duplicates, 15 rejected, 40 acked", st)
	}
}
