package sidecar

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

type ctxKey struct{}

// Txn is the transaction a request belongs to, and its sub-transaction here.
type Txn struct {
	ID  string // root transaction id (trace id)
	Sub uint64 // this service's sub-transaction (span id)
	c   *Client
}

// FromContext returns the transaction of ctx, if any.
func FromContext(ctx context.Context) (Txn, bool) {
	t, ok := ctx.Value(ctxKey{}).(Txn)
	return t, ok
}

// WithTxn returns ctx carrying t.
func WithTxn(ctx context.Context, t Txn) context.Context { return context.WithValue(ctx, ctxKey{}, t) }

func newSpan() uint64 {
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		if v := binary.BigEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

func newTraceID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Begin starts a root transaction at this service (it is the entry).
func (c *Client) Begin(ctx context.Context) (context.Context, Txn) { return c.BeginWith(ctx, "") }

// BeginWith starts a root transaction named id (a trace id that came with
// the request), or a new one when id is empty.
func (c *Client) BeginWith(ctx context.Context, id string) (context.Context, Txn) {
	if id == "" {
		id = newTraceID()
	}
	t := Txn{ID: id, Sub: newSpan(), c: c}
	c.mu.Lock()
	c.roots[t.ID] = t.Sub
	c.mu.Unlock()
	c.enqueue(&pb.Event{Type: pb.EventType_EVENT_TYPE_BEGIN, TxnId: t.ID, SubId: t.Sub}, false)
	return WithTxn(ctx, t), t
}

// Join returns ctx carrying a transaction this service joins as
// sub-transaction sub (its caller reported the call).
func (c *Client) Join(ctx context.Context, txn string, sub uint64) context.Context {
	return WithTxn(ctx, Txn{ID: txn, Sub: sub, c: c})
}

// End ends a root transaction begun here.
func (c *Client) End(t Txn) {
	c.mu.Lock()
	delete(c.roots, t.ID)
	c.mu.Unlock()
	c.enqueue(&pb.Event{Type: pb.EventType_EVENT_TYPE_END, TxnId: t.ID}, false)
}

// Call is an outbound call being made: where it goes, and its
// sub-transaction at the callee.
type Call struct {
	Txn     string
	Sub     uint64
	Version string
	Address string
	c       *Client
}

// Route decides where the next call of ctx's transaction to service goes.
// Outside an update it routes to the default version and only queues the
// CALL event; while the service is in update mode it waits for the
// coordinator's decision.
func (c *Client) Route(ctx context.Context, service string) (Call, error) {
	t, ok := FromContext(ctx)
	if !ok {
		return Call{}, fmt.Errorf("sidecar: no transaction in context")
	}
	call := Call{Txn: t.ID, Sub: newSpan(), c: c}
	ev := &pb.Event{Type: pb.EventType_EVENT_TYPE_CALL, TxnId: t.ID, Service: service, SubId: call.Sub, CallerSubId: t.Sub}
	c.routeMu.RLock()
	tab := c.routing.Load()
	var rt *route
	if tab != nil {
		rt = tab.services[service]
	}
	if rt == nil || !rt.updateMode {
		if rt != nil {
			ev.Version = rt.defaultVersion
		}
		c.enqueue(ev, false)
		c.routeMu.RUnlock()
		call.Version = ev.Version
		return call, c.pick(&call, rt)
	}
	ev.Wait = true
	w := make(chan *pb.CallDecision, 1)
	c.mu.Lock()
	c.seq++
	ev.Seq = c.seq
	c.waiters[ev.Seq] = w
	c.queue = append(c.queue, item{ev: ev})
	c.mu.Unlock()
	c.routeMu.RUnlock()
	c.wake()
	select {
	case d, ok := <-w:
		if !ok {
			return Call{}, ErrDisconnected
		}
		if d.Error != "" {
			return Call{}, fmt.Errorf("%w: %s", ErrRefused, d.Error)
		}
		call.Version = d.Version
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiters, ev.Seq)
		c.mu.Unlock()
		return Call{}, ctx.Err()
	}
	return call, c.pick(&call, c.routing.Load().services[service])
}

// pick chooses an endpoint of the call's version, round-robin.
func (c *Client) pick(call *Call, rt *route) error {
	if rt == nil {
		return fmt.Errorf("%w: service unknown to the routing table", ErrNoEndpoint)
	}
	addrs := rt.byVersion[call.Version]
	if len(addrs) == 0 {
		return fmt.Errorf("%w: %s", ErrNoEndpoint, call.Version)
	}
	call.Address = addrs[c.next.Add(1)%uint64(len(addrs))]
	return nil
}

// Finish reports that the call returned.
func (call Call) Finish() {
	call.c.enqueue(&pb.Event{Type: pb.EventType_EVENT_TYPE_RETURN, TxnId: call.Txn, SubId: call.Sub}, false)
}

// Done tells the coordinator that ctx's sub-transaction will not call
// service again, so the service can become free sooner.
func Done(ctx context.Context, service string) {
	t, ok := FromContext(ctx)
	if !ok || t.c == nil {
		return
	}
	t.c.enqueue(&pb.Event{Type: pb.EventType_EVENT_TYPE_DONE, TxnId: t.ID, SubId: t.Sub, Service: service}, false)
}
