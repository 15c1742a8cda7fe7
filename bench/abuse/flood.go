package main

import (
	"context"
	"fmt"
	"log"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// flood is the hostile session's event-rate flood: batches of floodBatch
// ENDs of transactions that do not exist (they change nothing and touch no
// other quota), due at ten times the session's rate whatever the
// coordinator does. It does not wait for Acks. A coordinator that stops
// reading a session over its rate makes Send block in HTTP/2 flow control:
// the batches that come due meanwhile are attempted but never sent (held
// back). A stream the coordinator closes for staying over its rate is
// reopened (the session resumes) after the SDK's reconnect backoff.
type flood struct {
	conn grpc.ClientConnInterface
	reg  *pb.Register
	cur  *atomic.Pointer[simsidecar.Sidecar] // shared with the heartbeats

	attempted, sent, heldBack atomic.Int64 // events
	acked, ackRefused         atomic.Int64 // events, as the Acks say
	budgetRefused             atomic.Int64 // refused for the rejected-events budget, as the Acks say
	unacked                   atomic.Int64 // events sent whose stream ended, or the phase, before their Ack
	closed                    atomic.Int64 // streams the coordinator closed with ResourceExhausted
	firstClose                atomic.Pointer[string]
}

const floodBatch = 1000

// run floods until ctx ends.
func (f *flood) run(ctx context.Context) {
	per := time.Duration(float64(time.Second) * floodBatch / (push * eventsPerSecond))
	next := time.Now()
	var acks sync.WaitGroup
	defer acks.Wait()
	failures := 0
	for i := 0; ctx.Err() == nil; i++ {
		evs := make([]*pb.Event, 0, floodBatch)
		for j := range floodBatch {
			evs = append(evs, simsidecar.End(fmt.Sprintf("hostile-rate-%d-%d", i, j)))
		}
		f.attempted.Add(floodBatch)
		sc := f.cur.Load()
		w, err := sc.SendAsync(evs...) // blocks while the coordinator does not read
		if err != nil {
			f.heldBack.Add(floodBatch) // attempted, not sent
			if !f.reconnect(ctx, sc, &failures) {
				return
			}
			continue // the batches due meanwhile are counted held back below
		}
		f.sent.Add(floodBatch)
		acks.Go(func() {
			select {
			case a, ok := <-w:
				if ok {
					f.acked.Add(floodBatch)
					f.ackRefused.Add(int64(simsidecar.RateRefused(a)))
					f.budgetRefused.Add(int64(simsidecar.RefusedFor(a, "--max-rejected-events-per-second")))
					return
				}
			case <-ctx.Done(): // still in flow control or unread when the phase ends
			}
			f.unacked.Add(floodBatch)
		})
		next = next.Add(per)
		if late := -time.Until(next); late > 0 {
			// The batches due while Send was blocked: attempted, held back.
			missed := int64(late / per)
			f.attempted.Add(missed * floodBatch)
			f.heldBack.Add(missed * floodBatch)
			next = next.Add(time.Duration(missed) * per)
		}
		pace(ctx, time.Until(next))
	}
}

// reconnect opens a new stream for the session once old has ended, after
// the SDK's backoff (25 ms doubling, at most 1 s); it reports whether the
// flood goes on.
func (f *flood) reconnect(ctx context.Context, old *simsidecar.Sidecar, failures *int) bool {
	<-old.Done()
	if err := old.Err(); status.Code(err) == codes.ResourceExhausted {
		if f.closed.Add(1) == 1 {
			msg := err.Error()
			f.firstClose.Store(&msg)
		}
	} else if ctx.Err() == nil {
		log.Printf("hostile flood: stream ended: %v", err)
	}
	for ctx.Err() == nil {
		pace(ctx, min(25*time.Millisecond<<min(*failures, 20), time.Second))
		*failures++
		sc, _, err := simsidecar.Connect(ctx, f.conn, f.reg)
		if err == nil {
			f.cur.Store(sc)
			return true
		}
	}
	return false
}

// report prints what the flood attempted, sent and had acknowledged.
func (f *flood) report() {
	fmt.Printf("event_rate_flood: attempted=%d sent=%d held_back=%d acked=%d refused_in_acks=%d refused_budget=%d unacked=%d streams_closed=%d\n",
		f.attempted.Load(), f.sent.Load(), f.heldBack.Load(), f.acked.Load(), f.ackRefused.Load(), f.budgetRefused.Load(), f.unacked.Load(), f.closed.Load())
	if m := f.firstClose.Load(); m != nil {
		log.Printf("hostile flood: first stream closed: %s", *m)
	}
}
