package coordinator

import (
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
