package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// registerTimeout bounds the wait for Registered on a new stream.
const registerTimeout = 10 * time.Second

var errSilent = errors.New("sidecar: no message from the coordinator for a lease TTL")

// redirectError ends a stream whose replica does not lead.
type redirectError struct{ leader string }

func (e redirectError) Error() string { return "sidecar: redirected to the leader at " + e.leader }

// run keeps a session until Close: it connects to the coordinators in turn,
// follows a redirect at once, and otherwise retries with exponential
// backoff and jitter, capped at the heartbeat interval (and at a second)
// so that a coordinator that comes back is found while the session's lease
// lives.
func (c *Client) run() {
	defer close(c.done)
	defer c.markReady(ErrClosed) // Close before the first table: Start returns
	var (
		next     int    // next index into Coordinators
		leader   string // address a follower named, tried first
		failures int    // attempts since the last registration
		ever     bool   // registered at least once
	)
	for {
		addr := leader
		if addr == "" {
			addr = c.cfg.Coordinators[next%len(c.cfg.Coordinators)]
			next++
		}
		registered, err := c.session(addr)
		select {
		case <-c.stop:
			return
		default:
		}
		if registered {
			ever, failures = true, 0
		} else if !ever && refusedForGood(err) {
			c.lg.Error("registration refused", "coordinator", addr, "error", err)
			c.markReady(fmt.Errorf("%w: %w", ErrRegister, err))
			return
		}
		var rd redirectError
		if errors.As(err, &rd) {
			c.lg.Info("redirected to the leader", "coordinator", addr, "leader", rd.leader)
			leader = rd.leader
			if failures++; failures == 1 {
				continue // follow at once, once in a row
			}
		} else {
			leader = ""
			failures++
		}
		d := c.backoff(failures)
		c.lg.Warn("coordinator stream ended, reconnecting", "coordinator", addr, "error", err, "backoff", d)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-c.stop:
			t.Stop()
			return
		}
	}
}

// backoff is the wait before attempt n+1: exponential from 25ms, capped at
// the heartbeat interval and maxReconnectBackoff, half of it random.
func (c *Client) backoff(n int) time.Duration {
	d := min(25*time.Millisecond<<min(n, 20), c.cfg.HeartbeatInterval, maxReconnectBackoff)
	return d/2 + rand.N(d/2+1)
}

// session runs one stream: it registers, then sends the queue (what the
// previous stream left unacknowledged first), heartbeats and routing acks,
// while a goroutine applies what the coordinator sends. It reports whether
// it registered, and why the stream ended (nil after Close).
func (c *Client) session(addr string) (registered bool, err error) {
	opts := append(append([]grpc.DialOption{grpc.WithTransportCredentials(c.creds)}, flowControlOptions()...), c.cfg.DialOptions...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := pb.NewSidecarServiceClient(conn).Connect(ctx)
	if err != nil {
		cancel()
		return false, err
	}
	regc := make(chan *pb.Registered, 1)
	recvErr := make(chan error, 1)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		recvErr <- c.receive(stream, regc)
	}()
	defer func() {
		cancel()
		<-recvDone // nothing of this stream is applied once it is over
	}()
	if err := stream.Send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Register{Register: c.reregister()}}); err != nil {
		return false, err
	}

	timeout := time.NewTimer(registerTimeout)
	defer timeout.Stop()
	var reg *pb.Registered
	select {
	case reg = <-regc:
	case err := <-recvErr:
		return false, err
	case <-timeout.C:
		return false, fmt.Errorf("sidecar: no answer to Register within %v", registerTimeout)
	case <-c.stop:
		return false, nil
	}
	ttl := reg.GetTtl().AsDuration()
	if ttl <= 0 {
		ttl = c.cfg.HeartbeatInterval * time.Duration(c.cfg.AllowedMisses+1)
	}
	c.stats.registrations.Add(1)
	c.connected.Store(true)
	defer c.connected.Store(false)
	c.lg.Info("registered", "coordinator", addr, "lease", reg.GetLeaseId(), "ttl", ttl,
		"resumed", reg.GetResumed(), "resynced", reg.GetResynced(), "ended", reg.GetEnded())

	hb := time.NewTicker(c.cfg.HeartbeatInterval)
	defer hb.Stop()
	flushT := time.NewTimer(c.cfg.FlushInterval)
	defer flushT.Stop()
	armed := true // the first tick sends what waited for this stream
	for {
		select {
		case <-c.stop:
			return true, c.drain(stream, recvErr)
		case err := <-recvErr:
			return true, err
		case <-hb.C:
			if time.Since(time.Unix(0, c.lastRecv.Load())) > ttl {
				return true, errSilent
			}
			if err := stream.Send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Heartbeat{Heartbeat: &pb.Heartbeat{}}}); err != nil {
				return true, err
			}
			continue
		case <-c.kick:
			c.mu.Lock()
			now := c.urgent || len(c.queue) >= c.cfg.BatchSize
			c.mu.Unlock()
			if !now {
				if !armed {
					flushT.Reset(c.cfg.FlushInterval)
					armed = true
				}
				continue
			}
		case <-flushT.C:
			armed = false
		}
		if err := c.flush(stream); err != nil {
			return true, err
		}
	}
}

// drain sends what is queued at Close, deregisters (unless
// KeepSessionOnClose), half-closes the stream and waits (within Close's
// context) for the coordinator to acknowledge everything and end the
// stream.
func (c *Client) drain(stream pb.SidecarService_ConnectClient, recvErr <-chan error) error {
	if err := c.flush(stream); err != nil {
		return err
	}
	if !c.cfg.KeepSessionOnClose {
		msg := &pb.SidecarMessage{Kind: &pb.SidecarMessage_Deregister{Deregister: &pb.Deregister{Reason: "sidecar closed"}}}
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	c.mu.Lock()
	ctx := c.closeCtx
	c.mu.Unlock()
	select {
	case err := <-recvErr:
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reregister prepares a new stream. It puts back in the queue, in seq
// order and ahead of what was queued meanwhile, every event the last stream
// did not acknowledge and the CALL of every call still waiting for its
// decision (the coordinator forgets the calls it held for a stream that
// ended); routing acks of the old stream are dropped. It returns the
// Register, whose live roots are the roots begun here and not ended.
func (c *Client) reregister() *pb.Register {
	c.mu.Lock()
	defer c.mu.Unlock()
	var waiting []uint64
	for seq := range c.waiters {
		if seq <= c.ackedThrough {
			waiting = append(waiting, seq)
		}
	}
	slices.Sort(waiting)
	var resend []*pb.Event
	for _, seq := range waiting {
		if w := c.waiters[seq]; w.abandoned {
			delete(c.waiters, seq) // held, then forgotten with the old stream
		} else {
			resend = append(resend, w.ev)
		}
	}
	resend = append(resend, c.inflight...)
	c.inflight = nil
	if n := len(resend); n > 0 {
		c.resentThrough = resend[n-1].Seq
		c.stats.resent.Add(uint64(n))
	}
	q := make([]item, 0, len(resend)+len(c.queue))
	for _, ev := range resend {
		q = append(q, item{ev: ev})
	}
	for _, it := range c.queue {
		if it.ev != nil {
			q = append(q, it)
		}
	}
	c.queue = q
	c.urgent = len(q) > 0

	reg := &pb.Register{
		InstanceId:        c.cfg.InstanceID,
		Service:           c.cfg.Service,
		Version:           c.cfg.Version,
		Address:           c.cfg.Address,
		Dependencies:      c.cfg.Dependencies,
		HeartbeatInterval: durationpb.New(c.cfg.HeartbeatInterval),
		AllowedMisses:     c.cfg.AllowedMisses,
	}
	// Every live root, its BEGIN sent or not: a request may have made
	// downstream calls, reported by other sidecars, before its BEGIN went
	// out, and a coordinator that took over since must treat it as legacy.
	// Its BEGIN, still queued, is then refused as a duplicate: counted as
	// one.
	for id, r := range c.roots {
		reg.LiveRoots = append(reg.LiveRoots, &pb.LiveRoot{TxnId: id, SubId: r.sub})
		if !r.sent {
			for _, it := range c.queue {
				if it.ev != nil && it.ev.Type == pb.EventType_EVENT_TYPE_BEGIN && it.ev.TxnId == id {
					c.resentThrough = max(c.resentThrough, it.ev.Seq)
				}
			}
		}
	}
	return reg
}

// flush sends the queue in order: runs of events as batches, routing acks
// in between. Events are in flight from before they are sent, so a failed
// send leaves them to be resent on the next stream.
func (c *Client) flush(stream pb.SidecarService_ConnectClient) error {
	c.mu.Lock()
	q := c.queue
	c.queue, c.urgent = nil, false
	for _, it := range q {
		ev := it.ev
		if ev == nil {
			continue
		}
		c.inflight = append(c.inflight, ev)
		if r := c.roots[ev.TxnId]; ev.Type == pb.EventType_EVENT_TYPE_BEGIN && r != nil && r.sub == ev.SubId {
			r.sent = true
		}
	}
	c.mu.Unlock()
	for len(q) > 0 {
		if q[0].ev == nil {
			msg := &pb.SidecarMessage{Kind: &pb.SidecarMessage_RoutingAck{RoutingAck: &pb.RoutingAck{Revision: q[0].ack}}}
			if err := stream.Send(msg); err != nil {
				return err
			}
			q = q[1:]
			continue
		}
		n := 0
		for n < len(q) && n < c.cfg.BatchSize && q[n].ev != nil {
			n++
		}
		evs := make([]*pb.Event, n)
		for i := range evs {
			evs[i] = q[i].ev
		}
		if err := stream.Send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Events{Events: &pb.EventBatch{Events: evs}}}); err != nil {
			return err
		}
		c.stats.sent.Add(uint64(n))
		q = q[n:]
	}
	return nil
}

// receive applies what the coordinator sends until the stream ends; the
// Registered answer goes to regc.
func (c *Client) receive(stream pb.SidecarService_ConnectClient, regc chan<- *pb.Registered) error {
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		c.lastRecv.Store(time.Now().UnixNano())
		switch k := m.Kind.(type) {
		case *pb.CoordinatorMessage_Registered:
			select {
			case regc <- k.Registered:
			default:
			}
		case *pb.CoordinatorMessage_Redirect:
			return redirectError{leader: k.Redirect.GetLeaderAddress()}
		case *pb.CoordinatorMessage_Ack:
			c.onAck(k.Ack)
		case *pb.CoordinatorMessage_Routing:
			c.applyRouting(k.Routing)
		case *pb.CoordinatorMessage_CallDecision:
			c.onDecision(k.CallDecision)
		case *pb.CoordinatorMessage_Deregistered:
			c.lg.Info("deregistered", "ended_roots", k.Deregistered.GetEnded(), "kept_roots", k.Deregistered.GetKept())
		case *pb.CoordinatorMessage_HeartbeatAck:
			if e := k.HeartbeatAck.GetError(); e != "" {
				c.lg.Warn("lease refresh failed at the coordinator", "error", e)
			}
		}
	}
}

// onAck forgets the acknowledged events and counts their errors: a
// resent event rejected as a duplicate had been applied already. Events
// the coordinator reports late changed nothing there, and need nothing
// here: a resent one was applied before (its sub-transaction has returned
// or its transaction ended since), any other lost a race with another
// sidecar's stream.
func (c *Client) onAck(a *pb.Ack) {
	c.mu.Lock()
	n := 0
	for n < len(c.inflight) && c.inflight[n].Seq <= a.GetThroughSeq() {
		n++
	}
	// An error about a run of events (EventError.through_seq) counts each
	// event of the run.
	var runs []int
	for _, e := range a.GetErrors() {
		k := 1
		if e.GetThroughSeq() > e.GetSeq() {
			k = 0
			for _, ev := range c.inflight[:n] {
				if ev.Seq >= e.GetSeq() && ev.Seq <= e.GetThroughSeq() {
					k++
				}
			}
		}
		runs = append(runs, max(k, 1))
	}
	c.inflight = slices.Delete(c.inflight, 0, n)
	c.ackedThrough = max(c.ackedThrough, a.GetThroughSeq())
	resent := c.resentThrough
	c.mu.Unlock()
	c.stats.acked.Add(uint64(n))
	for i, e := range a.GetErrors() {
		code := codes.Code(e.GetCode())
		if e.GetThroughSeq() > e.GetSeq() {
			if e.GetThroughSeq() <= resent && (code == codes.AlreadyExists || code == codes.NotFound) {
				c.stats.duplicates.Add(uint64(runs[i]))
				c.lg.Debug("resent events had been applied", "seq", e.GetSeq(), "through_seq", e.GetThroughSeq(), "code", code.String())
				continue
			}
			c.stats.rejected.Add(uint64(runs[i]))
			c.lg.Warn("events rejected", "seq", e.GetSeq(), "through_seq", e.GetThroughSeq(), "events", runs[i],
				"code", code.String(), "error", e.GetMessage())
			continue
		}
		if e.GetSeq() <= resent && (code == codes.AlreadyExists || code == codes.NotFound) {
			c.stats.duplicates.Add(1)
			c.lg.Debug("resent event had been applied", "seq", e.GetSeq(), "txn", e.GetTxnId(), "code", code.String())
			continue
		}
		c.stats.rejected.Add(1)
		c.lg.Warn("event rejected", "seq", e.GetSeq(), "txn", e.GetTxnId(), "code", code.String(), "error", e.GetMessage())
	}
	for _, l := range a.GetLate() {
		if l.GetSeq() <= resent {
			c.stats.duplicates.Add(1)
			c.lg.Debug("resent event had been applied", "seq", l.GetSeq(), "txn", l.GetTxnId(), "reason", l.GetReason().String())
			continue
		}
		c.stats.late.Add(1)
		c.lg.Debug("event came late, after another stream's", "seq", l.GetSeq(), "txn", l.GetTxnId(), "reason", l.GetReason().String())
	}
}

// onDecision hands a CallDecision to the call waiting for it. A call whose
// Route gave up gets a RETURN if the coordinator applied it.
func (c *Client) onDecision(d *pb.CallDecision) {
	c.mu.Lock()
	w := c.waiters[d.GetSeq()]
	if w == nil {
		c.mu.Unlock()
		return
	}
	delete(c.waiters, d.GetSeq())
	if w.abandoned {
		if d.GetError() == "" {
			_ = c.enqueueLocked(&pb.Event{Type: pb.EventType_EVENT_TYPE_RETURN, TxnId: w.ev.TxnId, SubId: w.ev.SubId}, false)
		}
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	w.ch <- d
}

// refusedForGood says whether a first registration's error is one no retry
// can cure: the Register is invalid, the workload's identity may not
// register as its service or instance (PermissionDenied), or its
// certificate is missing or names no identity (Unauthenticated).
func refusedForGood(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated:
		return true
	}
	return false
}
