package coordinator

import (
	"context"
	"errors"
	"testing"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

type countingErr struct{ n *int }

func (e countingErr) Error() string { *e.n++; return "boom" }

// A failing event's error names the event, keeps the engine's error in its
// chain, and is formatted only when read: applyBatch reads it after the
// event lock is released, so that a sidecar's failing events (5,000 a
// second of ENDs of unknown transactions in bench/abuse, within its rate)
// cost the lock a small allocation each, not a fmt.Errorf.
func TestEventErrFormatsWhenRead(t *testing.T) {
	n := 0
	cause := countingErr{&n}
	err := eventErr(pb.EventType_EVENT_TYPE_END, &pb.Event{TxnId: "T", SubId: 0x2a}, cause)
	if n != 0 {
		t.Fatalf("eventErr formatted its cause %d times; want none until read", n)
	}
	if got, want := err.Error(), `EVENT_TYPE_END txn "T" sub 000000000000002a: boom`; got != want {
		t.Fatalf("message %q, want %q", got, want)
	}
	if !errors.As(err, new(countingErr)) || !errors.As(err, new(eventFailure)) {
		t.Fatalf("%v: the cause and eventFailure must stay in the chain", err)
	}
}

// sentRecorder is a SidecarService_ConnectServer that records what is sent.
type sentRecorder struct {
	pb.SidecarService_ConnectServer
	sent []*pb.CoordinatorMessage
}

func (r *sentRecorder) Send(m *pb.CoordinatorMessage) error {
	r.sent = append(r.sent, m)
	return nil
}

// A message queued and flushed by the handler leaves no kick behind (the
// handler is not woken again to flush nothing, once per heartbeat), and a
// message queued after a flush still kicks: no wake-up is lost.
func TestFlushTakesTheKick(t *testing.T) {
	rec := &sentRecorder{}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	st := newStream(rec, ctx, cancel)
	ack := &pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_HeartbeatAck{HeartbeatAck: &pb.HeartbeatAck{}}}
	if err := st.send(ack); err != nil {
		t.Fatal(err)
	}
	if err := st.flush(); err != nil {
		t.Fatal(err)
	}
	if len(rec.sent) != 1 || rec.sent[0] != ack {
		t.Fatalf("sent %v, want the ack", rec.sent)
	}
	if n := len(st.kick); n != 0 {
		t.Fatalf("%d kicks left after the flush that sent the ack, want none", n)
	}
	if err := st.send(ack); err != nil {
		t.Fatal(err)
	}
	select {
	case <-st.kick:
	default:
		t.Fatal("a message queued after a flush did not kick the handler")
	}
	if err := st.flush(); err != nil {
		t.Fatal(err)
	}
	if len(rec.sent) != 2 {
		t.Fatalf("sent %d messages, want 2", len(rec.sent))
	}
}

// The heartbeat answer is one message per stream, emptied for each
// heartbeat: nothing of the previous answer (an error, Pending, a TTL, a
// TTL taken away) stays, and taking it allocates nothing.
func TestHeartbeatAckReused(t *testing.T) {
	st := newStream(&sentRecorder{}, context.Background(), func(error) {})
	first, ack := st.heartbeatAck()
	ack.Ttl.Seconds, ack.Ttl.Nanos = 15, 7
	ack.Pending, ack.Error = true, "keep-alive failed"
	again, ack2 := st.heartbeatAck()
	if again != first || ack2 != ack || first.GetHeartbeatAck() != ack {
		t.Fatal("heartbeatAck returned a new message, want the stream's own")
	}
	if ack.Pending || ack.Error != "" || ack.Ttl == nil || ack.Ttl.Seconds != 0 || ack.Ttl.Nanos != 0 {
		t.Fatalf("answer after emptying: %v, want a zero TTL and nothing else", ack)
	}
	ack.Ttl = nil // an expired session's answer has none
	if _, ack = st.heartbeatAck(); ack.Ttl == nil {
		t.Fatal("the TTL taken away by one answer is missing from the next")
	}
	if n := testing.AllocsPerRun(100, func() { st.heartbeatAck() }); n != 0 {
		t.Fatalf("heartbeatAck allocates %v objects, want none", n)
	}
}
