package coordinator

import (
	"time"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The event applier: one goroutine (runApplier) applies the event batches
// of every stream, first come, first served. A stream's handler hands its
// batch in (applyEvents) and waits for the Ack, which it sends itself.
//
// Before it, each handler took the event lock itself, and under load they
// queued on it: Go's mutex lets the goroutine that just released it take
// it again, so a handler with batches waiting applied several in a row
// while the others waited, until a waiter had waited 1 ms; the mutex then
// hands it over one waiter at a time, each hand-off waiting for that
// waiter to be scheduled on a processor the other handlers also want. In
// bench/ingest -update-cycle (21 streams on 2 cores) the longest a stream
// went without an Ack was 36-66 ms a run; with one applier, 22-46 ms in 27
// runs of 29 (53 and 68 in the others), and a quarter to two thirds more
// events a second (docs/BENCHMARKS.md).
//
// The periodic jobs, registrations and admin reads still take the event
// lock directly; the applier is one more taker of it, the one every batch
// goes through.

// applyReq is a batch handed to the applier; the Ack and the hold go back
// on done (the stream's, one batch at a time).
type applyReq struct {
	s    *session
	st   *stream
	evs  []*pb.Event
	at   time.Time // when the handler handed it in
	done chan<- applyResult
}

type applyResult struct {
	ack  *pb.Ack
	hold rateHold
}

// runApplier applies the batches handed in until the coordinator stops.
// A batch it took is always answered; after it stops, handlers apply
// their batches themselves (applyEvents).
func (c *Coordinator) runApplier() {
	for {
		select {
		case r := <-c.applyq:
			ack, hold := c.applyBatch(r.s, r.st, r.evs, r.at)
			r.done <- applyResult{ack, hold}
		case <-c.ctx.Done():
			return
		}
	}
}

// applyEvents applies a stream's batch through the applier and returns its
// Ack and what the stream must do before it reads on (applyBatch). Before
// the applier runs and once the coordinator is stopping, the batch is
// applied here, under the event lock all the same.
func (c *Coordinator) applyEvents(s *session, st *stream, evs []*pb.Event) (*pb.Ack, rateHold) {
	at := time.Now()
	if c.started.Load() {
		select {
		case c.applyq <- applyReq{s: s, st: st, evs: evs, at: at, done: st.applied}:
			r := <-st.applied
			return r.ack, r.hold
		case <-c.ctx.Done():
		}
	}
	return c.applyBatch(s, st, evs, at)
}
