package sidecar

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

type ctxKey struct{}

// Txn is the distributed transaction a request belongs to, and the
// sub-transaction it runs as here.
type Txn struct {
	// ID is the root transaction id (the trace id).
	ID string
	// Sub is the id of this service's sub-transaction (the span id).
	Sub uint64
	// Correlation is the id outside tracing gave the request that started
	// the transaction, if any: the trace id of its traceparent, else of its
	// B3 headers, else its x-request-id. It is only for logs and traces,
	// and is carried on to the callees in the headers it came by; it never
	// names the transaction (an outside header must not make a request
	// join, block or end a transaction it did not start).
	Correlation string

	c         *Client
	carry     carriers // tracing headers that carried it in, to carry on
	trace     string   // the outside trace id, carried in traceparent and B3
	requestID string   // the x-request-id it came with, carried on
	flags     string   // traceparent trace-flags to pass on
	lane      *lane    // the lane snapshot fixed at its entry (lane.go); nil: none
}

// FromContext returns the transaction ctx carries, if any.
func FromContext(ctx context.Context) (Txn, bool) {
	t, ok := ctx.Value(ctxKey{}).(Txn)
	return t, ok
}

func withTxn(ctx context.Context, t Txn) context.Context { return context.WithValue(ctx, ctxKey{}, t) }

// newID returns a random non-zero 64-bit id.
func newID() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if v := binary.BigEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

// Begin starts a root transaction at this service (the entry) with a new
// random trace id, and queues its BEGIN. After Close the transaction is
// still returned, but nothing is reported.
func (c *Client) Begin(ctx context.Context) (context.Context, Txn) {
	return c.begin(ctx, Txn{flags: "01"}, nil)
}

// begin is Begin of a root that keeps the correlation of t; get, if set,
// reads the request's headers, which may select a lane (lane.go).
func (c *Client) begin(ctx context.Context, t Txn, get func(string) string) (context.Context, Txn) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	t.ID, t.Sub, t.c = hex.EncodeToString(b[:]), newID(), c
	ev := &pb.Event{Type: pb.EventType_EVENT_TYPE_BEGIN, TxnId: t.ID, SubId: t.Sub}
	if get != nil {
		if t.lane = c.routing.Load().matchLane(get); t.lane != nil {
			ev.Lane = t.lane.name
		}
	}
	c.mu.Lock()
	if c.enqueueLocked(ev, false) == nil {
		c.roots[t.ID] = &root{sub: t.Sub}
	}
	c.mu.Unlock()
	return withTxn(ctx, t), t
}

// End ends the root transaction of ctx, which Begin started here, and
// queues its END.
func (c *Client) End(ctx context.Context) error {
	t, ok := FromContext(ctx)
	if !ok {
		return ErrNoTxn
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.roots[t.ID]; r == nil || r.sub != t.Sub {
		return fmt.Errorf("%w: %s", ErrNotRoot, t.ID)
	}
	delete(c.roots, t.ID)
	return c.enqueueLocked(&pb.Event{Type: pb.EventType_EVENT_TYPE_END, TxnId: t.ID}, false)
}

// Join returns ctx carrying transaction id as sub-transaction sub at this
// service, which its caller created (and reported) for an inbound call.
// Middleware and the server interceptors join for you; Join carries no
// lane (JoinFrom reads it from the call's headers).
func (c *Client) Join(ctx context.Context, id string, sub uint64) context.Context {
	return withTxn(ctx, Txn{ID: id, Sub: sub, c: c, flags: "01"})
}

// Call is an outbound call of a transaction: the sub-transaction it creates
// at the callee, and where it goes.
type Call struct {
	TxnID   string
	Sub     uint64
	Service string
	Version string
	Address string
	// Decided: the coordinator named Version for this call (the service
	// was in update mode, or outside the routing scope), rather than the
	// routing table's default version.
	Decided bool

	c      *Client
	txn    Txn       // the caller's, for propagation
	routed time.Time // when Route returned it: an outcome's latency counts from then
}

// Route is what an outbound call to service does first: it creates the
// callee's sub-transaction and picks an endpoint (round-robin) of the
// version the call must run on. Outside update mode that is the service's
// default version; Route queues the CALL naming it and returns at once.
// While the service is in update mode, or when it is not in the routing
// table (outside this service's scope: the first call to a service not
// declared as a dependency), Route sends the CALL now and waits, until ctx
// ends, for the coordinator to name the version (and then for the route of
// that version, which follows the decision of a call outside the scope).
// Call Finish when the call returns. Errors wrap ErrNoTxn,
// ErrUnknownService (the service never registered: the coordinator said
// so), ErrNoEndpoint, ErrRefused or ErrClosed; a Route that fails has
// nothing to Finish.
func (c *Client) Route(ctx context.Context, service string) (Call, error) {
	t, ok := FromContext(ctx)
	if !ok {
		return Call{}, ErrNoTxn
	}
	call := Call{TxnID: t.ID, Sub: newID(), Service: service, c: c, txn: t}
	ev := &pb.Event{Type: pb.EventType_EVENT_TYPE_CALL, TxnId: t.ID, Service: service, SubId: call.Sub, CallerSubId: t.Sub}
	for {
		tab := c.routing.Load()
		rt := tab.lookup(service)
		laneName, laneVer, inLane := c.laneVersion(t, tab, service)
		ev.Lane = "" // a table applied meanwhile may have dropped it (NaiveLanes)
		if inLane {
			// A lane call: the lane's version, whatever the update mode
			// (no decision to wait for); the route only, if the service
			// is outside the scope.
			ev.Lane, ev.Version = laneName, laneVer
			if rt == nil {
				return c.await(ctx, call, ev)
			}
		}
		if rt == nil && c.knownUnknown(service) {
			return Call{}, fmt.Errorf("%w: %q", ErrUnknownService, service)
		}
		if !inLane && (rt == nil || rt.updateMode) {
			return c.await(ctx, call, ev)
		}
		version := rt.defaultVersion
		if inLane {
			version = laneVer
		}
		addr, err := rt.pick(version)
		if err != nil {
			if inLane {
				return Call{}, fmt.Errorf("route to %s: lane %s: %w: %s", service, laneName, ErrNoLaneEndpoint, version)
			}
			return Call{}, fmt.Errorf("route to %s: %w", service, err)
		}
		ev.Version = version
		c.mu.Lock()
		if c.routing.Load() != tab {
			c.mu.Unlock()
			continue // a table was applied meanwhile: route by it, so that no CALL routed by an older one follows its ack
		}
		err = c.enqueueLocked(ev, false)
		c.mu.Unlock()
		if err != nil {
			return Call{}, err
		}
		call.Version, call.Address, call.routed = ev.Version, addr, time.Now()
		return call, nil
	}
}

// await sends a CALL with wait and waits for its decision.
func (c *Client) await(ctx context.Context, call Call, ev *pb.Event) (Call, error) {
	ev.Wait = true
	w := &waiter{ev: ev, ch: make(chan *pb.CallDecision, 1)}
	c.mu.Lock()
	if err := c.enqueueLocked(ev, true); err != nil {
		c.mu.Unlock()
		return Call{}, err
	}
	c.waiters[ev.Seq] = w
	c.mu.Unlock()

	var d *pb.CallDecision
	select {
	case d = <-w.ch:
	case <-ctx.Done():
		c.mu.Lock()
		if c.waiters[ev.Seq] == w {
			w.abandoned = true // a decision that comes later gets a RETURN
			c.mu.Unlock()
		} else {
			c.mu.Unlock()
			if d, ok := <-w.ch; ok && d.GetError() == "" {
				call.Finish() // decided as we gave up
			}
		}
		return Call{}, fmt.Errorf("sidecar: waiting for the decision on a call to %s: %w", call.Service, ctx.Err())
	}
	if d == nil {
		return Call{}, ErrClosed
	}
	if d.GetUnknownService() {
		c.mu.Lock()
		c.unknown[call.Service] = time.Now()
		c.mu.Unlock()
		return Call{}, fmt.Errorf("%w: %q: %s", ErrUnknownService, call.Service, d.GetError())
	}
	if d.GetError() != "" {
		return Call{}, fmt.Errorf("%w: call to %s: %s", ErrRefused, call.Service, d.GetError())
	}
	call.Version, call.Decided = d.GetVersion(), ev.Lane == ""
	addr, err := c.waitRoute(ctx, call.Service, call.Version)
	if err != nil {
		call.Finish()
		if ev.Lane != "" {
			return Call{}, fmt.Errorf("route to %s: lane %s: %w: %s (%w)", call.Service, ev.Lane, ErrNoLaneEndpoint, call.Version, err)
		}
		return Call{}, fmt.Errorf("route to %s: %w", call.Service, err)
	}
	call.Address, call.routed = addr, time.Now()
	return call, nil
}

// Finish reports that the call returned (queues its RETURN). Call it once.
func (call Call) Finish() {
	if call.c != nil {
		_ = call.c.enqueue(&pb.Event{Type: pb.EventType_EVENT_TYPE_RETURN, TxnId: call.TxnID, SubId: call.Sub})
	}
}

// Done tells the coordinator that the sub-transaction of ctx will not call
// service again, so that service may be updated sooner (DESIGN.md §2: the
// "done" hint). It is a no-op without a transaction.
func Done(ctx context.Context, service string) {
	if t, ok := FromContext(ctx); ok && t.c != nil {
		_ = t.c.enqueue(&pb.Event{Type: pb.EventType_EVENT_TYPE_DONE, TxnId: t.ID, SubId: t.Sub, Service: service})
	}
}
