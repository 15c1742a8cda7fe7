package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
// decisions, routing tables) are queued by whoever produces them and sent
// by the stream's handler goroutine alone, in queue order: a sidecar that
// does not read blocks only its own handler, never the broadcaster, the
// pin committer or another stream's events.
type stream struct {
	srv     pb.SidecarService_ConnectServer
	ctx     context.Context
	cancel  context.CancelCauseFunc
	sendMu  sync.Mutex
	out     []*pb.CoordinatorMessage // queued; guarded by sendMu
	kick    chan struct{}            // signals out is not empty
	ready   bool                     // Registered was queued; guarded by sendMu
	lastRev uint64                   // newest routing revision queued; guarded by sendMu
}

var errTakenOver = errors.New("coordinator: session taken over by a newer stream")

// errSlowSidecar ends a stream whose outbound queue is full.
var errSlowSidecar = errors.New("coordinator: sidecar does not read its stream")

// errLate marks an event that arrived after what it is about was over (from
// another stream: a DONE hint of a sub-transaction whose RETURN, sent by the
// caller's sidecar, came first). Such events are ignored and counted.
var errLate = errors.New("coordinator: late event")

func newStream(srv pb.SidecarService_ConnectServer, ctx context.Context, cancel context.CancelCauseFunc) *stream {
	return &stream{srv: srv, ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1)}
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

// sendRouting queues a routing table unless a newer one was queued already,
// or the stream is not registered yet (it gets the newest table right after).
func (st *stream) sendRouting(rev uint64, m *pb.CoordinatorMessage) error {
	st.sendMu.Lock()
	defer st.sendMu.Unlock()
	if !st.ready || rev <= st.lastRev {
		return nil
	}
	st.lastRev = rev
	return st.enqueueLocked(m)
}

// flush sends the queued messages; only the handler goroutine calls it.
func (st *stream) flush() error {
	for {
		st.sendMu.Lock()
		out := st.out
		st.out = nil
		st.sendMu.Unlock()
		if len(out) == 0 {
			return nil
		}
		for _, m := range out {
			if err := st.srv.Send(m); err != nil {
				return err
			}
		}
	}
}

// SidecarServer returns the gRPC SidecarService implementation.
func (c *Coordinator) SidecarServer() pb.SidecarServiceServer { return sidecarServer{c: c} }

type sidecarServer struct {
	pb.UnimplementedSidecarServiceServer
	c *Coordinator
}

func (s sidecarServer) Connect(srv pb.SidecarService_ConnectServer) error { return s.c.connect(srv) }

func (c *Coordinator) connect(srv pb.SidecarService_ConnectServer) error {
	c.stopMu.Lock()
	if c.stopping.Load() {
		c.stopMu.Unlock()
		return status.Error(codes.Unavailable, "coordinator is shutting down")
	}
	c.streams.Add(1)
	c.stopMu.Unlock()
	defer c.streams.Done()
	ctx, cancel := context.WithCancelCause(srv.Context())
	defer cancel(nil)
	stop := context.AfterFunc(c.ctx, func() { cancel(ErrStopped) })
	defer stop()
	st := newStream(srv, ctx, cancel)

	msgs := make(chan *pb.SidecarMessage)
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := srv.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case msgs <- m:
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
	for {
		var m *pb.SidecarMessage
		select {
		case <-ctx.Done():
			switch cause := context.Cause(ctx); {
			case errors.Is(cause, ErrStopped):
				return status.Error(codes.Unavailable, "coordinator is shutting down")
			case errors.Is(cause, errSlowSidecar):
				return status.Error(codes.ResourceExhausted, "the sidecar did not read its stream: outbound queue full; reconnect")
			case errors.Is(cause, errTakenOver):
				return status.Error(codes.Aborted, "session taken over by a newer stream or dropped; register again")
			default:
				return status.FromContextError(ctx.Err()).Err()
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
		case m = <-msgs:
		}
		var out *pb.CoordinatorMessage
		switch k := m.Kind.(type) {
		case *pb.SidecarMessage_Register:
			if sess != nil {
				return status.Errorf(codes.FailedPrecondition,
					"stream already registered as instance %q; open a new stream to register again", sess.rec.InstanceId)
			}
			s, reg, err := c.register(ctx, st, k.Register)
			if err != nil {
				return err
			}
			sess = s
			if err := st.sendRegistered(reg); err != nil {
				return err
			}
			if err := c.sendRoutingTo(st); err != nil {
				return err
			}
			if err := st.flush(); err != nil {
				return err
			}
			continue
		case *pb.SidecarMessage_RoutingAck:
			if sess == nil {
				return status.Error(codes.FailedPrecondition, "routing ack before register")
			}
			c.routingAck(sess, k.RoutingAck.GetRevision())
			continue
		case *pb.SidecarMessage_Events:
			out = &pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_Ack{Ack: c.applyBatch(sess, st, k.Events.GetEvents())}}
		case *pb.SidecarMessage_Heartbeat:
			if sess == nil {
				return status.Error(codes.FailedPrecondition, "heartbeat before register")
			}
			out = &pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_HeartbeatAck{HeartbeatAck: c.heartbeat(sess)}}
		default:
			return status.Error(codes.InvalidArgument, "empty sidecar message")
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
		s.stream = nil
		c.lg.Info("session disconnected", "instance", s.rec.InstanceId, "lease", int64(s.lease))
	}
	c.dropHeldLocked(s, st)
}

// applyBatch applies events in order under one lock and acknowledges them.
func (c *Coordinator) applyBatch(s *session, st *stream, evs []*pb.Event) *pb.Ack {
	ack := &pb.Ack{}
	if n := len(evs); n > 0 {
		ack.ThroughSeq = evs[n-1].GetSeq()
	}
	if len(evs) > MaxEventsPerBatch {
		ack.Errors = append(ack.Errors, &pb.EventError{
			Code:    int32(codes.InvalidArgument),
			Message: fmt.Sprintf("batch of %d events is larger than %d; nothing applied", len(evs), MaxEventsPerBatch),
		})
		return ack
	}
	var counts [int(pb.EventType_EVENT_TYPE_END) + 1]int
	late := 0
	c.mu.Lock()
	c.applyStoredPhasesLocked() // a phase stored meanwhile acts before these events
	c.eng.SetEpoch(c.epoch())
	current := s != nil && s.stream == st && c.sessions[s.rec.InstanceId] == s
	for _, ev := range evs {
		var err error
		if !current {
			err = status.Error(codes.FailedPrecondition, ErrNotRegistered.Error()+": send Register first")
		} else {
			err = c.applyLocked(s, st, ev)
		}
		if err == nil {
			if t := ev.GetType(); t > 0 && int(t) < len(counts) {
				counts[t]++
			}
			continue
		}
		if errors.Is(err, graph.ErrTxnEnded) || errors.Is(err, errLate) {
			late++ // a late event from another stream
			if ev.GetWait() {
				c.out = append(c.out, decision{st: st, msg: &pb.CallDecision{Seq: ev.GetSeq(), Error: "transaction ended"}})
			}
			continue
		}
		stat := status.Convert(err)
		ack.Errors = append(ack.Errors, &pb.EventError{
			Seq:     ev.GetSeq(),
			Code:    int32(stat.Code()),
			Message: stat.Message(),
			TxnId:   ev.GetTxnId(),
		})
		if ev.GetWait() {
			// The sidecar holds this call until it hears back.
			c.out = append(c.out, decision{st: st, msg: &pb.CallDecision{Seq: ev.GetSeq(), Error: stat.Message()}})
		}
	}
	if len(c.active) > 0 {
		c.progressLocked() // switching is atomic with event application
	}
	c.unlockAndSend()
	c.metrics.observeBatch(counts[:], late, ack.Errors)
	return ack
}

// applyLocked applies one event; the error is a gRPC status (or wraps
// graph.ErrTxnEnded for late events).
func (c *Coordinator) applyLocked(s *session, st *stream, ev *pb.Event) error {
	if ev == nil {
		return status.Error(codes.InvalidArgument, "nil event")
	}
	if err := validTxnID(ev.TxnId); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	typ := ev.Type
	sub := graph.SubID(ev.SubId)
	if sub == 0 && typ != pb.EventType_EVENT_TYPE_END {
		return status.Errorf(codes.InvalidArgument, "%s: sub_id is 0", typ)
	}
	var err error
	switch typ {
	case pb.EventType_EVENT_TYPE_BEGIN:
		if err = c.eng.Begin(ev.TxnId, s.svc, s.ver, sub, s.owner); err == nil {
			c.releaseBegunLocked(ev.TxnId)
		}
	case pb.EventType_EVENT_TYPE_CALL:
		if ev.CallerSubId == 0 {
			return status.Error(codes.InvalidArgument, "CALL: caller_sub_id is 0")
		}
		if e := storage.ValidName("service", ev.Service); e != nil {
			return status.Errorf(codes.InvalidArgument, "CALL: %v", e)
		}
		if ev.SubId == ev.CallerSubId {
			return status.Error(codes.InvalidArgument, "CALL: sub_id equals caller_sub_id")
		}
		if ev.Version != "" {
			if e := storage.ValidName("version", ev.Version); e != nil {
				return status.Errorf(codes.InvalidArgument, "CALL: %v", e)
			}
		}
		to := c.eng.Service(ev.Service)
		if ev.Wait {
			if at, v, ok := c.eng.SubAt(ev.TxnId, sub); ok && at == to {
				// Applied already, its answer lost with a stream (the
				// sidecar resends what was not acknowledged): answer again.
				// Not before the pin it was answered with is durable.
				d := decision{st: st, msg: &pb.CallDecision{Seq: ev.Seq, Version: c.eng.VersionName(v)}}
				d.pin = c.pendingPins[c.keys.Pin(ev.Service, ev.TxnId)]
				c.out = append(c.out, d)
				return nil
			}
			err = c.decideLocked(s, st, ev, to)
			break
		}
		version := c.routes[to]
		if ev.Version != "" {
			version = c.eng.Version(ev.Version)
		}
		err = c.callLocked(s, ev, to, version)
	case pb.EventType_EVENT_TYPE_RETURN:
		err = c.eng.Return(ev.TxnId, sub)
	case pb.EventType_EVENT_TYPE_DONE:
		to, ok := c.eng.LookupService(ev.Service)
		if !ok {
			return status.Errorf(codes.InvalidArgument, "DONE: unknown service %q", ev.Service)
		}
		err = c.eng.Done(ev.TxnId, sub, to)
		if errors.Is(err, graph.ErrUnknownSub) {
			return errLate // the sub-transaction has returned: the hint is moot
		}
	case pb.EventType_EVENT_TYPE_END:
		err = c.eng.End(ev.TxnId)
	default:
		return status.Errorf(codes.InvalidArgument, "unknown event type %d", int32(typ))
	}
	if err == nil || errors.Is(err, graph.ErrTxnEnded) || errors.Is(err, errLate) {
		return err
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return eventStatus(typ, ev, err)
}

// callLocked applies a CALL at the given version of the callee.
func (c *Coordinator) callLocked(s *session, ev *pb.Event, to graph.ServiceID, version graph.VersionID) error {
	info, err := c.eng.Call(ev.TxnId, s.svc, s.ver, graph.SubID(ev.CallerSubId), to, graph.SubID(ev.SubId), version)
	if err != nil {
		if errors.Is(err, graph.ErrTxnEnded) {
			return err
		}
		return eventStatus(ev.Type, ev, err)
	}
	if info.Implicit {
		c.eng.Adopt(ev.TxnId, s.owner) // until its Begin arrives
		c.implicit[ev.TxnId] = time.Now()
	}
	if info.LearnedEdge {
		c.metrics.learnedEdges.Inc()
		c.lg.Warn("learned undeclared static edge", "from", s.rec.Service, "to", ev.Service, "txn", ev.TxnId)
		// Its services declared less than they call: what else this
		// transaction may call is unknown, so it blocks every service (a
		// service mid-update included) until it ends (DESIGN.md §3).
		c.eng.MakeLegacy(ev.TxnId, 0, nil)
	}
	return nil
}

// eventStatus turns an engine error into a status that says what was wrong.
func eventStatus(typ pb.EventType, ev *pb.Event, err error) error {
	code := codes.InvalidArgument
	switch {
	case errors.Is(err, graph.ErrUnknownTxn):
		code = codes.NotFound
	case errors.Is(err, graph.ErrUnknownSub):
		code = codes.NotFound
	case errors.Is(err, graph.ErrTxnExists), errors.Is(err, graph.ErrSubExists):
		code = codes.AlreadyExists
	}
	return status.Errorf(code, "%s txn %q sub %016x: %v", typ, ev.TxnId, ev.SubId, err)
}
