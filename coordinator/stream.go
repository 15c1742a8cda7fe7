package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/eventwire"
	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// MaxEventsPerBatch bounds one EventBatch.
const MaxEventsPerBatch = 65536

// MaxOutbound bounds the messages queued for one stream. A sidecar that
// stops reading long enough to fill it is cut off (it reconnects and
// resends what was not acknowledged) rather than let the queue grow.
const MaxOutbound = 1 << 16

// stream is one sidecar stream. Messages to the sidecar (acks, call
// decisions, routing) are queued by whoever produces them and sent by the
// stream's handler goroutine: a sidecar that does not read blocks only its
// own stream, never the routing publisher, the pin committer or another
// stream's events. The one exception is a registered session's heartbeat:
// the stream's receiver answers it itself (answerHeartbeat), so a
// heartbeat costs no hand-off to the handler goroutine; wireMu orders the
// two senders.
//
// Routing has a slot of its own rather than a place in the queue: at most
// one routing message is pending, and a newer one is merged into it
// (routingSlot), so a slow stream holds one snapshot, or one bounded run
// of deltas, never a backlog of tables. The slot is sent after the queued
// messages, once Registered was queued.
type stream struct {
	srv    pb.SidecarService_ConnectServer
	ctx    context.Context
	cancel context.CancelCauseFunc
	sendMu sync.Mutex
	out    []*pb.CoordinatorMessage // queued; guarded by sendMu
	// wireMu is held around each srv.Send: the handler's flush and the
	// receiver's heartbeat answers share the stream. It is taken with
	// nothing else held.
	wireMu     sync.Mutex
	wireClosed bool             // the handler returned: no Send any more; guarded by wireMu
	kick       chan struct{}    // signals out or the routing slot is not empty
	applied    chan applyResult // the applier's answer to the handler's batch (applier.go)
	ready      bool             // Registered was queued; guarded by sendMu
	routing    routingSlot      // guarded by sendMu

	// hb is the heartbeat answer, one message reused for every heartbeat
	// of the stream; the receiver goroutine alone uses it (heartbeatAck).
	hb    *pb.CoordinatorMessage
	hbAck *pb.HeartbeatAck
	hbTTL *durationpb.Duration
	// beatAt is when the stream's session last had a heartbeat answered
	// (or registered), in Unix nanoseconds: a pause of the stream
	// (ratehold.go) must not starve the heartbeats queued behind it.
	beatAt atomic.Int64
	// ttl is the session's lease TTL as registered on this stream; the
	// handler's alone.
	ttl time.Duration
}

// heartbeatAck returns the stream's heartbeat answer, emptied, for the
// receiver to fill and send. The receiver sends it before it reads the
// next message, and Send has encoded it when it returns, so nothing holds
// it when it is filled again: an idle session's heartbeats allocate no
// answer (before: three objects a heartbeat).
func (st *stream) heartbeatAck() (*pb.CoordinatorMessage, *pb.HeartbeatAck) {
	if st.hb == nil {
		st.hbAck, st.hbTTL = &pb.HeartbeatAck{}, &durationpb.Duration{}
		st.hb = &pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_HeartbeatAck{HeartbeatAck: st.hbAck}}
	}
	st.hbAck.Reset()
	st.hbTTL.Reset()
	st.hbAck.Ttl = st.hbTTL
	return st.hb, st.hbAck
}

var errTakenOver = errors.New("coordinator: session taken over by a newer stream")

// errSlowSidecar ends a stream whose outbound queue is full.
var errSlowSidecar = errors.New("coordinator: sidecar does not read its stream")

func newStream(srv pb.SidecarService_ConnectServer, ctx context.Context, cancel context.CancelCauseFunc) *stream {
	return &stream{srv: srv, ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1), applied: make(chan applyResult, 1)}
}

func (st *stream) takeOver() { st.cancel(errTakenOver) }

// enqueueLocked queues m; sendMu is held.
func (st *stream) enqueueLocked(m *pb.CoordinatorMessage) error {
	if st.ctx.Err() != nil {
		return context.Cause(st.ctx)
	}
	if len(st.out) >= MaxOutbound {
		st.cancel(errSlowSidecar)
		return errSlowSidecar
	}
	st.out = append(st.out, m)
	select {
	case st.kick <- struct{}{}:
	default:
	}
	return nil
}

// send queues m for the stream; it never blocks.
func (st *stream) send(m *pb.CoordinatorMessage) error {
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	return st.enqueueLocked(m)
}

// sendRegistered queues the Registered answer; routing tables may follow.
func (st *stream) sendRegistered(r *pb.Registered) error {
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	if err := st.enqueueLocked(&pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_Registered{Registered: r}}); err != nil {
		return err
	}
	st.ready = true
	return nil
}

// offerRouting merges a routing message into the stream's slot (see
// routingSlot.offer); it reports whether the stream must be resynced with
// a snapshot.
func (st *stream) offerRouting(m *routingMsg) (resync bool) {
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	if st.ctx.Err() != nil {
		return false
	}
	queued, resync := st.routing.offer(m)
	if queued {
		select {
		case st.kick <- struct{}{}:
		default:
		}
	}
	return resync
}

// flush sends the queued messages, then the pending routing; only the
// handler goroutine calls it. It first takes the kick: what it sends
// includes everything queued before that, and whatever is queued after
// kicks again. So the handler's own answer (a heartbeat's ack, queued and
// flushed at once) does not wake the handler a second time for nothing.
func (st *stream) flush() error {
	select {
	case <-st.kick:
	default:
	}
	for {
		st.sendMu.Lock()
		out := st.out
		st.out = nil
		var r *pb.Routing
		if st.ready {
			r = st.routing.take()
		}
		st.sendMu.Unlock()
		if len(out) == 0 && r == nil {
			return nil
		}
		for _, m := range out {
			if err := st.sendWire(m); err != nil {
				return err
			}
		}
		if r != nil {
			if err := st.sendWire(&pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_Routing{Routing: r}}); err != nil {
				return err
			}
		}
	}
}

// sendWire sends m on the stream, after any Send of the other sender.
func (st *stream) sendWire(m *pb.CoordinatorMessage) error {
	st.wireMu.Lock()
	defer st.wireMu.Unlock()
	if st.wireClosed {
		return errStreamDone
	}
	return st.srv.Send(m)
}

// closeWire is called as the handler returns: gRPC forbids a Send after
// that, and the receiver may still be answering a heartbeat.
func (st *stream) closeWire() {
	st.wireMu.Lock()
	defer st.wireMu.Unlock()
	st.wireClosed = true
}

// errStreamDone is the receiver's Send after the handler returned.
var errStreamDone = errors.New("coordinator: stream ended")

// answerHeartbeat answers a registered session's heartbeat from the
// receiver goroutine: fill (the lease's last refresh, never waiting for
// etcd) writes into the stream's reused answer, which is sent at once.
// The answer may pass messages queued for the handler to send; nothing in
// a heartbeat's answer depends on their order.
func (st *stream) answerHeartbeat(fill func(*pb.HeartbeatAck)) error {
	m, ack := st.heartbeatAck()
	fill(ack)
	return st.sendWire(m)
}

// SidecarServer returns the gRPC SidecarService implementation.
func (c *Coordinator) SidecarServer() pb.SidecarServiceServer { return sidecarServer{c: c} }

// ServerOptions are the options a gRPC server that serves SidecarServer
// must run with: the sidecar stream is read off the wire by eventwire's
// codec (for every other message it is gRPC's proto codec).
func ServerOptions() []grpc.ServerOption { return []grpc.ServerOption{eventwire.ServerOption()} }

type sidecarServer struct {
	pb.UnimplementedSidecarServiceServer
	c *Coordinator
}

func (s sidecarServer) Connect(srv pb.SidecarService_ConnectServer) error {
	return toGRPCError(s.c.connect(srv))
}

// received is a message the stream's receiver decoded, and the slab its
// events were decoded into (eventwire), released once they are applied.
type received struct {
	m    *pb.SidecarMessage
	slab *eventwire.Slab
	over *eventwire.OversizedError // an event batch refused undecoded, too large
}

// connect serves a sidecar stream. The server must run with
// ServerOptions: the receiver reads the stream's frames undecoded.
func (c *Coordinator) connect(srv pb.SidecarService_ConnectServer) error {
	c.stopMu.Lock()
	if c.stopping.Load() {
		c.stopMu.Unlock()
		return errShuttingDown
	}
	c.streams.Add(1)
	c.stopMu.Unlock()
	defer c.streams.Done()
	ctx, cancel := context.WithCancelCause(srv.Context())
	defer cancel(nil)
	stop := context.AfterFunc(c.ctx, func() { cancel(ErrStopped) })
	defer stop()
	st := newStream(srv, ctx, cancel)
	defer st.closeWire()

	msgs := make(chan received)
	recvErr := make(chan error, 1)
	// registered is the stream's session once Register is done; until
	// then, and after a Deregister, heartbeats go to the handler in order
	// with the rest.
	var registered atomic.Pointer[session]
	go func() {
		var f eventwire.Frame
		dec := eventwire.Decoder{MaxEvents: MaxEventsPerBatch}
		for {
			if err := srv.RecvMsg(&f); err != nil {
				recvErr <- err
				return
			}
			m, slab, err := dec.Decode(f.Bytes())
			f.Release()
			var over *eventwire.OversizedError
			switch {
			case errors.As(err, &over):
				// Refused in its Ack, as applyBatch refuses it, but
				// before its events take memory.
				m = &pb.SidecarMessage{Kind: &pb.SidecarMessage_Events{Events: &pb.EventBatch{}}}
			case err != nil:
				recvErr <- fmt.Errorf("%w: %v", ErrInvalidArgument, err)
				return
			}
			if _, hb := m.Kind.(*pb.SidecarMessage_Heartbeat); hb {
				if s := registered.Load(); s != nil {
					if err := st.answerHeartbeat(func(ack *pb.HeartbeatAck) { c.heartbeat(s, ack) }); err != nil {
						recvErr <- err
						return
					}
					st.beatAt.Store(time.Now().UnixNano())
					continue
				}
			}
			select {
			case msgs <- received{m, slab, over}:
			case <-ctx.Done():
				return
			}
		}
	}()

	var sess *session
	defer func() {
		if sess != nil {
			c.detach(sess, st)
		}
	}()
	regTimer := time.NewTimer(c.cfg.RegisterTimeout)
	defer regTimer.Stop()
	// in is msgs while the stream is read, nil while a session over its
	// event rate is not (until resume fires).
	in := msgs
	var resume <-chan time.Time
	for {
		var r received
		select {
		case <-resume:
			in, resume = msgs, nil
			continue
		case <-regTimer.C:
			if sess == nil {
				return fmt.Errorf("%w within %v of opening the stream", ErrNoRegister, c.cfg.RegisterTimeout)
			}
			continue
		case <-ctx.Done():
			switch cause := context.Cause(ctx); {
			case errors.Is(cause, ErrStopped):
				return errShuttingDown
			case errors.Is(cause, errSlowSidecar):
				return fmt.Errorf("%w: outbound queue full; reconnect", errSlowSidecar)
			case errors.Is(cause, errTakenOver):
				return fmt.Errorf("%w or dropped; register again", errTakenOver)
			default:
				return ctx.Err()
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-st.kick:
			if err := st.flush(); err != nil {
				return err
			}
			continue
		case r = <-in:
		}
		var out *pb.CoordinatorMessage
		switch k := r.m.Kind.(type) {
		case *pb.SidecarMessage_Register:
			if sess != nil {
				return fmt.Errorf("%w as instance %q; open a new stream to register again",
					ErrAlreadyRegistered, sess.rec.InstanceId)
			}
			s, reg, err := c.register(ctx, st, k.Register)
			if err != nil {
				return err
			}
			sess = s
			// Its snapshot comes from the routing publisher (the
			// registration asked for it).
			if err := st.sendRegistered(reg); err != nil {
				return err
			}
			if err := st.flush(); err != nil {
				return err
			}
			// Only now may the receiver answer heartbeats: none of its
			// answers goes out before Registered.
			st.ttl = reg.GetTtl().AsDuration()
			st.beatAt.Store(time.Now().UnixNano())
			registered.Store(s)
			continue
		case *pb.SidecarMessage_RoutingAck:
			if sess == nil {
				return fmt.Errorf("%w: routing ack before register", ErrNotRegistered)
			}
			c.routingAck(sess, k.RoutingAck.GetRevision())
			continue
		case *pb.SidecarMessage_Events:
			if r.over != nil {
				out = &pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_Ack{Ack: oversizedAck(r.over.Events, r.over.LastSeq)}}
				break
			}
			ack, hold := c.applyEvents(sess, st, k.Events.GetEvents())
			r.slab.Release() // applied: nothing refers to its events (held calls keep clones)
			out = &pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_Ack{Ack: ack}}
			if hold != (rateHold{}) {
				// Over its rate or its rejected-events budget: the Ack (its
				// refusal) goes out first, then the stream is closed or not
				// read for a while (ratehold.go, rejectbudget.go).
				if err := st.send(out); err != nil {
					return err
				}
				if err := st.flush(); err != nil {
					return err
				}
				if hold.closeErr != nil {
					return hold.closeErr
				}
				if st.mayPause(hold.pause) {
					in, resume = nil, time.After(hold.pause)
				}
				continue
			}
		case *pb.SidecarMessage_Deregister:
			if sess == nil {
				return fmt.Errorf("%w: deregister before register", ErrNotRegistered)
			}
			d, err := c.deregister(ctx, sess, st, k.Deregister.GetReason())
			if err != nil {
				return err
			}
			sess = nil // over: nothing to detach
			registered.Store(nil)
			if err := st.send(&pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_Deregistered{Deregistered: d}}); err != nil {
				return err
			}
			return st.flush()
		case *pb.SidecarMessage_Heartbeat:
			if sess == nil {
				return fmt.Errorf("%w: heartbeat before register", ErrNotRegistered)
			}
			// One the receiver passed on before the session was
			// registered (it answers the others itself): a fresh answer,
			// the reused one is the receiver's.
			ack := &pb.HeartbeatAck{Ttl: &durationpb.Duration{}}
			c.heartbeat(sess, ack)
			out = &pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_HeartbeatAck{HeartbeatAck: ack}}
		default:
			return fmt.Errorf("%w: empty sidecar message", ErrInvalidArgument)
		}
		if err := st.send(out); err != nil {
			return err
		}
		if err := st.flush(); err != nil {
			return err
		}
	}
}

// detach marks the session disconnected when its stream ends. The session
// keeps its lease until the TTL: a sidecar that reconnects in time resumes.
func (c *Coordinator) detach(s *session, st *stream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.stream == st {
		c.sess.attach(s, nil)
		c.lg.Info("session disconnected", "instance", s.rec.InstanceId, "lease", int64(s.lease))
	}
	c.orch.dropHeldLocked(s, st)
}

// applyBatch applies events in order under one lock and acknowledges them.
// Events it refuses without looking at them (past the session's event
// rate, or all of them on a stream that did not register) get one error
// for the run, not one each: a flood of them costs the event lock and the
// Ack next to nothing per event.
//
// A batch that had events refused for the rate also returns what the
// stream must do about it (rateHold: stop reading for a while, or close).
// waitFrom is when the stream's handler handed the batch in: the wait
// until the lock is held is observed (batch_lock_wait_seconds). It runs on
// the applier (applier.go).
func (c *Coordinator) applyBatch(s *session, st *stream, evs []*pb.Event, waitFrom time.Time) (*pb.Ack, rateHold) {
	ack := &pb.Ack{}
	var hold rateHold
	if len(evs) == 0 {
		// Nothing to apply, refuse or charge: an empty Ack (through_seq
		// 0), registered or not.
		return ack, hold
	}
	ack.ThroughSeq = evs[len(evs)-1].GetSeq()
	if len(evs) > MaxEventsPerBatch {
		return oversizedAck(len(evs), ack.ThroughSeq), hold
	}
	var counts [int(pb.EventType_EVENT_TYPE_END) + 1]int
	var late [numLateReasons]int
	var errCodes errorCounts
	var failed []failedEvent
	rejected := 0 // of failed, those that draw on the rejected-events budget
	c.mu.Lock()
	lockedAt := time.Now()
	c.orch.applyStoredPhasesLocked() // a phase stored meanwhile acts before these events
	c.eng.SetEpoch(c.epoch())
	current := s != nil && s.stream == st && c.sess.get(s.rec.InstanceId) == s
	now := lockedAt
	admitted := 0
	var refusal error // of evs[admitted:]
	switch {
	case !current:
		refusal = fmt.Errorf("%w: send Register first", ErrNotRegistered)
	case c.adm.rejectedDebtLocked(s, now):
		// In debt on its rejected-events budget (rejectbudget.go): not
		// applied, and not read again until the debt is repaid.
		refusal = c.adm.refuseLocked(s, quotaRejected, c.adm.rejectedExceeded(), len(evs))
		hold.pause = c.adm.chargeRejectedLocked(s, 0, now)
	default:
		if admitted = c.adm.admitEventsLocked(s, len(evs), now); admitted < len(evs) {
			refusal = c.adm.refuseLocked(s, quotaEventRate, c.adm.eventRateExceeded(), len(evs)-admitted)
			hold = c.adm.overRateLocked(s, now)
		}
	}
	for _, ev := range evs[:admitted] {
		err := c.applyLocked(s, st, ev)
		if err == nil {
			if t := ev.GetType(); t > 0 && int(t) < len(counts) {
				counts[t]++
			}
			continue
		}
		if r := lateReason(err); r != pb.LateReason_LATE_REASON_UNSPECIFIED {
			// Moot: another stream's event came first. Neither applied
			// nor rejected.
			late[r]++
			ack.Late = append(ack.Late, &pb.LateEvent{Seq: ev.GetSeq(), Reason: r, TxnId: ev.GetTxnId()})
			if ev.GetWait() {
				c.orch.emit(decision{st: st, msg: &pb.CallDecision{Seq: ev.GetSeq(), Error: lateMessage(r)}})
			}
			continue
		}
		if ev.GetWait() && errors.Is(err, ErrUnknownService) {
			// Not a service of the mesh (an external host): the decision
			// says so, and the sidecar lets the call go out untouched.
			c.orch.emit(decision{st: st, msg: &pb.CallDecision{Seq: ev.GetSeq(), Error: err.Error(), UnknownService: true}})
			continue
		}
		failed = append(failed, failedEvent{ev, err}) // its error is built after unlocking
		if countsAsRejected(err) {
			rejected++
		}
		if ev.GetWait() {
			// The sidecar holds this call until it hears back.
			c.orch.emit(decision{st: st, msg: &pb.CallDecision{Seq: ev.GetSeq(), Error: err.Error()}})
		}
	}
	if rejected > 0 && hold.closeErr == nil {
		hold.pause = max(hold.pause, c.adm.chargeRejectedLocked(s, rejected, now))
	}
	var refusedMsg string
	if refusal != nil {
		refusedMsg = refusal.Error()
		for _, ev := range evs[admitted:] {
			if ev.GetWait() { // held by the sidecar until it hears back
				c.orch.emit(decision{st: st, msg: &pb.CallDecision{Seq: ev.GetSeq(), Error: refusedMsg}})
			}
		}
	}
	if c.orch.upd.anyActive() {
		c.orch.progressLocked() // switching is atomic with event application
	}
	heldFor := time.Since(lockedAt)
	c.unlockAndSend()
	c.metrics.batchLockWait.Observe(lockedAt.Sub(waitFrom).Seconds())
	c.metrics.batchLockHeld.Observe(heldFor.Seconds())
	ack.Errors = appendEventErrors(ack.Errors, failed, &errCodes)
	if refusal != nil {
		first := evs[admitted]
		e := eventError(first.GetSeq(), first.GetTxnId(), refusal)
		if n := len(evs) - admitted; n > 1 {
			e.ThroughSeq, e.TxnId = evs[len(evs)-1].GetSeq(), ""
		}
		ack.Errors = append(ack.Errors, e)
		errCodes.add(e.Code, len(evs)-admitted)
	}
	c.metrics.observeBatch(counts[:], late[:], &errCodes)
	if len(ack.Late) > 0 && c.lg.Enabled(context.Background(), slog.LevelDebug) {
		c.lg.Debug("late events ignored", "instance", s.rec.InstanceId, "late", len(ack.Late),
			"first_seq", ack.Late[0].GetSeq(), "first_reason", ack.Late[0].GetReason().String())
	}
	return ack, hold
}

// oversizedAck refuses a batch of n events, more than MaxEventsPerBatch,
// whose last event's seq is last: nothing of it is applied. The stream's
// receiver refuses such a batch before decoding its events; applyBatch
// refuses one that reaches it.
func oversizedAck(n int, last uint64) *pb.Ack {
	return &pb.Ack{ThroughSeq: last, Errors: []*pb.EventError{eventError(0, "",
		fmt.Errorf("%w: batch of %d events is larger than %d; nothing applied", ErrInvalidArgument, n, MaxEventsPerBatch))}}
}

// failedEvent is an event applyBatch rejected, and why.
type failedEvent struct {
	ev  *pb.Event
	err error
}

// detailedErrors is how many of a batch's rejected events get an error of
// their own in the Ack. Past them, consecutive events rejected by the
// engine for one cause (an END of a transaction the coordinator does not
// know, ...) share one error for the run (EventError.through_seq): a
// sidecar that sends thousands of such events, by mistake or on purpose,
// costs the coordinator one error a run, not a formatted message and a
// status each (about 100 bytes an event, a 100 KB Ack for 1,000).
const detailedErrors = 16

// appendEventErrors appends the errors of failed (in seq order) to errs
// and counts them by code.
func appendEventErrors(errs []*pb.EventError, failed []failedEvent, codes *errorCounts) []*pb.EventError {
	var (
		run      *pb.EventError // the run being extended, past detailedErrors
		runCause eventFailure   // its first event's failure
		runLen   int
	)
	closeRun := func() {
		if run != nil && runLen > 1 {
			run.Message = fmt.Sprintf("%d events, seq %d through %d, each: %s %v (the first of txn %q)",
				runLen, run.Seq, run.ThroughSeq, runCause.typ, runCause.err, run.TxnId)
			run.TxnId = ""
		} else if run != nil {
			run.ThroughSeq = 0
		}
		run, runLen = nil, 0
	}
	for i, f := range failed {
		var cause eventFailure
		sameCause := errors.As(f.err, &cause)
		if run != nil && sameCause && cause.typ == runCause.typ && f.ev.GetSeq() == run.ThroughSeq+1 &&
			cause.err.Error() == runCause.err.Error() { // a cause that names its event differs from the next one's
			run.ThroughSeq = f.ev.GetSeq()
			runLen++
			codes.add(run.Code, 1)
			continue
		}
		closeRun()
		e := eventError(f.ev.GetSeq(), f.ev.GetTxnId(), f.err)
		errs = append(errs, e)
		codes.add(e.Code, 1)
		if i >= detailedErrors && sameCause {
			// May start a run: the next events, if they fail alike.
			run, runCause, runLen = e, cause, 1
			e.ThroughSeq = e.Seq
		}
	}
	closeRun()
	return errs
}

// errorCounts counts a batch's rejected events by gRPC code.
type errorCounts [int(codes.Unauthenticated) + 1]int

func (ec *errorCounts) add(code int32, n int) {
	if code < 0 || int(code) >= len(ec) {
		code = int32(codes.Unknown)
	}
	ec[code] += n
}

// numLateReasons bounds the pb.LateReason values.
const numLateReasons = int(pb.LateReason_LATE_REASON_LEGACY) + 1

// lateReason says why the engine's err means the event came late (another
// stream's event made it moot), or LATE_REASON_UNSPECIFIED if it does not.
func lateReason(err error) pb.LateReason {
	switch {
	case errors.Is(err, graph.ErrTxnEnded):
		return pb.LateReason_LATE_REASON_TXN_ENDED
	case errors.Is(err, graph.ErrSubReturned):
		return pb.LateReason_LATE_REASON_SUB_RETURNED
	case errors.Is(err, graph.ErrEarlyLimit):
		return pb.LateReason_LATE_REASON_EARLY_LIMIT
	case errors.Is(err, graph.ErrLegacySub):
		return pb.LateReason_LATE_REASON_LEGACY
	}
	return pb.LateReason_LATE_REASON_UNSPECIFIED
}

// lateMessage answers a waiting CALL that came late.
func lateMessage(r pb.LateReason) string {
	switch r {
	case pb.LateReason_LATE_REASON_TXN_ENDED:
		return "transaction ended"
	case pb.LateReason_LATE_REASON_SUB_RETURNED:
		return "sub-transaction returned"
	}
	return "late event"
}

// applyLocked applies one event; the error says what was wrong, or is an
// engine error for which lateReason names a reason (a late event).
func (c *Coordinator) applyLocked(s *session, st *stream, ev *pb.Event) error {
	if ev == nil {
		return fmt.Errorf("%w: nil event", ErrInvalidArgument)
	}
	if err := validTxnID(ev.TxnId); err != nil {
		return err
	}
	typ := ev.Type
	sub := graph.SubID(ev.SubId)
	if sub == 0 && typ != pb.EventType_EVENT_TYPE_END {
		return fmt.Errorf("%w: %s: sub_id is 0", ErrInvalidArgument, typ)
	}
	var err error
	switch typ {
	case pb.EventType_EVENT_TYPE_BEGIN:
		if ev.Lane != "" && !laneName.MatchString(ev.Lane) {
			return fmt.Errorf("%w: BEGIN: lane %q is not a lane name", ErrInvalidArgument, ev.Lane)
		}
		if err := c.checkNewTxnLocked(s, ev.TxnId); err != nil {
			return err
		}
		if err = c.eng.Begin(ev.TxnId, s.svc, s.ver, sub, s.owner); err == nil {
			c.orch.releaseBegunLocked(ev.TxnId)
			// No longer implicit, if it was: out of the set now, or a
			// mesh that delivers calls before begins keeps every such
			// transaction there until the next sweep.
			delete(c.implicit, ev.TxnId)
		}
	case pb.EventType_EVENT_TYPE_CALL:
		if ev.CallerSubId == 0 {
			return fmt.Errorf("%w: CALL: caller_sub_id is 0", ErrInvalidArgument)
		}
		if e := storage.ValidName("service", ev.Service); e != nil {
			return fmt.Errorf("CALL: %w", e)
		}
		if ev.SubId == ev.CallerSubId {
			return fmt.Errorf("%w: CALL: sub_id equals caller_sub_id", ErrInvalidArgument)
		}
		if ev.Version != "" {
			if e := storage.ValidName("version", ev.Version); e != nil {
				return fmt.Errorf("CALL: %w", e)
			}
		}
		if ev.Lane != "" {
			if !laneName.MatchString(ev.Lane) || ev.Version == "" {
				return fmt.Errorf("%w: CALL: lane %q: want a lane name and the lane's version", ErrInvalidArgument, ev.Lane)
			}
		}
		if ev.Wait && !c.knownServiceLocked(ev.Service) {
			// A sidecar asks before its first call to a service outside
			// its routing scope; one that never registered is not the
			// mesh's.
			return fmt.Errorf("CALL: %w %q", ErrUnknownService, ev.Service)
		}
		ch, qerr := c.checkCallLocked(s, ev)
		if qerr != nil {
			return qerr
		}
		to := c.eng.Service(ev.Service)
		defer c.chargeCallLocked(s, ev, ch)
		if ev.Wait {
			if at, v, ok := c.eng.SubAt(ev.TxnId, sub); ok && at == to {
				// Applied already, its answer lost with a stream (the
				// sidecar resends what was not acknowledged): answer again.
				// Not before the pin it was answered with is durable.
				d := decision{st: st, msg: &pb.CallDecision{Seq: ev.Seq, Version: c.eng.VersionName(v)}}
				d.pin = c.orch.pendingPins[pinKey(ev.Service, ev.TxnId)]
				c.orch.emit(d)
				return nil
			}
			if ev.Lane != "" {
				// A lane call (DESIGN.md §4.9): the version is the lane's,
				// fixed at the transaction's entry; no strategy decides,
				// pins or holds it. It waited only for the route (outside
				// the scope), which follows the learned edge.
				if err = c.callLocked(s, ev, to, c.eng.Version(ev.Version)); err == nil {
					c.orch.emit(decision{st: st, msg: &pb.CallDecision{Seq: ev.Seq, Version: ev.Version}})
				}
				break
			}
			err = c.orch.decideLocked(s, st, ev, to)
			break
		}
		version := c.cat.defaultVersion(to)
		if ev.Version != "" {
			version = c.eng.Version(ev.Version)
		}
		err = c.callLocked(s, ev, to, version)
	case pb.EventType_EVENT_TYPE_RETURN:
		if from, ok := c.eng.SubCaller(ev.TxnId, sub); ok && from != s.svc {
			return c.notOwner(typ, fmt.Errorf("%w: RETURN txn %q sub %016x: service %q did not call it", ErrNotOwner, ev.TxnId, ev.SubId, s.rec.Service))
		}
		if ev.Outcome != nil {
			c.orch.observeOutcomeLocked(ev.TxnId, sub, ev.Outcome)
		}
		err = c.eng.Return(ev.TxnId, sub)
	case pb.EventType_EVENT_TYPE_DONE:
		to, ok := c.eng.LookupService(ev.Service)
		if !ok {
			return fmt.Errorf("%w: DONE: unknown service %q", ErrInvalidArgument, ev.Service)
		}
		// Before the CALL of its sub it waits for it; after the
		// caller's RETURN it is moot (graph.ErrSubReturned).
		err = c.eng.DoneBy(ev.TxnId, sub, to, s.svc) // only sub's own service says it is done
	case pb.EventType_EVENT_TYPE_END:
		if !c.mayEndLocked(s, ev.TxnId) {
			return c.notOwner(typ, fmt.Errorf("%w: END txn %q: it is not a root of instance %q", ErrNotOwner, ev.TxnId, s.rec.InstanceId))
		}
		n := c.orch.notePinsLocked(ev.TxnId, c.epoch) // while its uses are known
		if err = c.eng.End(ev.TxnId); err != nil {
			c.orch.forgetPinsSince(n)
		} else if c.orch.hasMootPins() {
			c.wakeFlusher() // their deletions are written behind too
		}
	default:
		return fmt.Errorf("%w: unknown event type %d", ErrInvalidArgument, int32(typ))
	}
	if err == nil || lateReason(err) != pb.LateReason_LATE_REASON_UNSPECIFIED {
		return err
	}
	if errors.Is(err, graph.ErrNotOwner) {
		c.notOwner(typ, err)
	}
	if errors.As(err, new(eventFailure)) {
		return err
	}
	return eventErr(typ, ev, err)
}

// notOwner counts an event of type typ refused because its session does
// not own what it is about, and returns err.
func (c *Coordinator) notOwner(typ pb.EventType, err error) error {
	c.metrics.ownership.WithLabelValues(strings.TrimPrefix(typ.String(), "EVENT_TYPE_")).Inc()
	return err
}

// mayEndLocked says whether session s may END txn: it owns it (it began
// it, or is its instance's session after a resync), or txn is adopted
// (seen through calls, its Begin not seen; or legacy, restored from a
// record another session's lease held) and used s's service. An adopted
// transaction's owner is the session that adopted it, and after a
// failover which service its root ran at is not known (a legacy entry is
// its first recorded use): its root's END, replayed by the SDK after it
// reconnected, comes from a service it used. A transaction this engine
// does not know is the engine's to answer.
func (c *Coordinator) mayEndLocked(s *session, txn string) bool {
	owner, entry, adopted, ok := c.eng.OwnerOf(txn)
	if !ok || owner == s.owner {
		return true
	}
	if !adopted {
		return false
	}
	if entry == s.svc {
		return true
	}
	_, used := c.eng.Used(txn, s.svc)
	return used
}

// knownServiceLocked says whether a service registered: it has a route,
// or a live session.
func (c *Coordinator) knownServiceLocked(name string) bool {
	id, ok := c.eng.LookupService(name)
	if !ok {
		return false
	}
	if c.cat.routed(id) {
		return true
	}
	for range c.sess.ofService(id) {
		return true
	}
	return false
}

// callLocked applies a CALL at the given version of the callee.
func (c *Coordinator) callLocked(s *session, ev *pb.Event, to graph.ServiceID, version graph.VersionID) error {
	info, err := c.eng.Call(ev.TxnId, s.svc, s.ver, graph.SubID(ev.CallerSubId), to, graph.SubID(ev.SubId), version)
	if err != nil {
		if lateReason(err) != pb.LateReason_LATE_REASON_UNSPECIFIED {
			return err
		}
		return eventErr(ev.Type, ev, err)
	}
	if info.Implicit {
		c.eng.Adopt(ev.TxnId, s.owner) // until its Begin arrives
		c.implicit[ev.TxnId] = time.Now()
	}
	if info.LearnedEdge {
		s.quota.learned++
		if c.cat.learn(edge{s.svc, to}) {
			// The callee joins the scope of the caller's sessions: its
			// route follows as a delta.
			c.routing.widen([]edge{{s.svc, to}})
		}
		c.metrics.learnedEdges.Inc()
		c.lg.Warn("learned undeclared static edge", "from", s.rec.Service, "to", ev.Service, "txn", ev.TxnId)
		// Its services declared less than they call: what else this
		// transaction may call is unknown, so it blocks every service (a
		// service mid-update included) until it ends (DESIGN.md §3).
		c.eng.MakeLegacy(ev.TxnId, 0, nil)
	}
	return nil
}

// eventFailure is an engine error that says which event it is about. Its
// message is formatted when it is read, after the event lock is released
// (applyBatch): a sidecar's failing events cost the lock little.
type eventFailure struct {
	typ pb.EventType
	txn string
	sub uint64
	err error
}

func (e eventFailure) Error() string {
	return fmt.Sprintf("%s txn %q sub %016x: %v", e.typ, e.txn, e.sub, e.err)
}

func (e eventFailure) Unwrap() error { return e.err }

// eventErr says which event an engine error is about (the engine's
// sentinel stays in the chain, for its gRPC code).
func eventErr(typ pb.EventType, ev *pb.Event, err error) error {
	return eventFailure{typ: typ, txn: ev.TxnId, sub: ev.SubId, err: err}
}
