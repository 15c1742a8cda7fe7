// Package simsidecar is a simulated sidecar for tests and benchmarks: it
// speaks the real sidecar protocol over a real gRPC stream (register, batched
// events with sequence numbers, heartbeats) without any HTTP service behind
// it, so a test can replay exact event sequences and read every answer.
package simsidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Sidecar is one simulated sidecar stream. Send may be called from one
// goroutine at a time; answers are read by a background goroutine.
type Sidecar struct {
	stream pb.SidecarService_ConnectClient
	cancel context.CancelFunc
	seq    atomic.Uint64
	// rejected counts events the coordinator rejected (per-event errors).
	rejected atomic.Int64
	lastErr  atomic.Pointer[pb.EventError]

	sendMu sync.Mutex // gRPC streams allow one sender at a time
	// routeMu makes "read the routing table and send the call" atomic with
	// "apply a new table and acknowledge it", as a real sidecar must: a
	// call sent after the ack of an update-mode table must wait.
	routeMu sync.RWMutex

	mu      sync.Mutex
	waiters map[uint64]chan *pb.Ack // by through_seq
	// waitFrom is since when the stream, with batches unacknowledged,
	// has been waiting for the next Ack; maxAckGap the longest such wait.
	waitFrom  time.Time
	maxAckGap time.Duration
	decisions map[uint64]chan *pb.CallDecision
	routing   *pb.Routing
	routingCh chan struct{} // closed and replaced when routing changes
	hb        chan *pb.HeartbeatAck
	dereg     chan *pb.Deregistered
	err       error
	done      chan struct{}
	// AutoAck makes the sidecar acknowledge every routing table as soon as
	// it arrives (the default); tests of the prepare handshake turn it off.
	autoAck bool
}

// Connect opens a stream on conn and registers.
func Connect(ctx context.Context, conn grpc.ClientConnInterface, reg *pb.Register) (*Sidecar, *pb.Registered, error) {
	sctx, cancel := context.WithCancel(context.Background())
	stream, err := pb.NewSidecarServiceClient(conn).Connect(sctx)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	if err := stream.Send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Register{Register: reg}}); err != nil {
		cancel()
		return nil, nil, err
	}
	type result struct {
		m   *pb.CoordinatorMessage
		err error
	}
	first := make(chan result, 1)
	go func() {
		m, err := stream.Recv()
		first <- result{m, err}
	}()
	var r result
	select {
	case r = <-first:
	case <-ctx.Done():
		cancel()
		return nil, nil, ctx.Err()
	}
	if r.err != nil {
		cancel()
		return nil, nil, r.err
	}
	registered := r.m.GetRegistered()
	if registered == nil {
		cancel()
		return nil, nil, fmt.Errorf("simsidecar: expected Registered, got %v", r.m)
	}
	s := &Sidecar{
		stream:    stream,
		cancel:    cancel,
		waiters:   make(map[uint64]chan *pb.Ack),
		decisions: make(map[uint64]chan *pb.CallDecision),
		routingCh: make(chan struct{}),
		hb:        make(chan *pb.HeartbeatAck, 16),
		dereg:     make(chan *pb.Deregistered, 1),
		done:      make(chan struct{}),
		autoAck:   true,
	}
	go s.recv()
	return s, registered, nil
}

func (s *Sidecar) recv() {
	defer close(s.done)
	for {
		m, err := s.stream.Recv()
		if err != nil {
			s.mu.Lock()
			s.err = err
			for k, w := range s.waiters {
				close(w)
				delete(s.waiters, k)
			}
			for k, w := range s.decisions {
				close(w)
				delete(s.decisions, k)
			}
			s.mu.Unlock()
			return
		}
		switch k := m.Kind.(type) {
		case *pb.CoordinatorMessage_Ack:
			if n := len(k.Ack.Errors); n > 0 {
				for _, e := range k.Ack.Errors {
					// A run of events refused together (seqs here are
					// consecutive) counts each.
					s.rejected.Add(int64(max(e.ThroughSeq, e.Seq) - e.Seq + 1))
				}
				s.lastErr.Store(k.Ack.Errors[n-1])
			}
			s.mu.Lock()
			w := s.waiters[k.Ack.ThroughSeq]
			delete(s.waiters, k.Ack.ThroughSeq)
			if w != nil {
				now := time.Now()
				s.maxAckGap = max(s.maxAckGap, now.Sub(s.waitFrom))
				s.waitFrom = now
			}
			s.mu.Unlock()
			if w != nil {
				w <- k.Ack
			}
		case *pb.CoordinatorMessage_Deregistered:
			select {
			case s.dereg <- k.Deregistered:
			default:
			}
		case *pb.CoordinatorMessage_HeartbeatAck:
			select {
			case s.hb <- k.HeartbeatAck:
			default:
			}
		case *pb.CoordinatorMessage_Routing:
			s.routeMu.Lock()
			s.mu.Lock()
			if r := applyRouting(s.routing, k.Routing); r != nil {
				s.routing = r
				close(s.routingCh)
				s.routingCh = make(chan struct{})
			}
			auto := s.autoAck
			s.mu.Unlock()
			if auto {
				_ = s.AckRouting(k.Routing.Revision)
			}
			s.routeMu.Unlock()
		case *pb.CoordinatorMessage_CallDecision:
			s.mu.Lock()
			w := s.decisions[k.CallDecision.Seq]
			delete(s.decisions, k.CallDecision.Seq)
			s.mu.Unlock()
			if w != nil {
				w <- k.CallDecision
			}
		}
	}
}

// startWaitLocked starts the wait for an Ack when a batch is sent on a
// stream with none unacknowledged.
func (s *Sidecar) startWaitLocked() {
	if len(s.waiters) == 0 {
		s.waitFrom = time.Now()
	}
}

// MaxAckGap returns the longest the stream went without an Ack while it had
// batches unacknowledged (since the last reset), and resets it if asked.
func (s *Sidecar) MaxAckGap(reset bool) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.maxAckGap
	if reset {
		s.maxAckGap = 0
	}
	return g
}

// Rejected returns how many events the coordinator rejected so far, and
// the last rejection.
func (s *Sidecar) Rejected() (int64, *pb.EventError) { return s.rejected.Load(), s.lastErr.Load() }

// Err is why the stream ended (nil while it is open).
func (s *Sidecar) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Done is closed when the stream has ended.
func (s *Sidecar) Done() <-chan struct{} { return s.done }

// SendAsync numbers the events, sends them as one batch, and returns a
// channel that receives the batch's Ack (closed without a value if the
// stream ends first).
func (s *Sidecar) SendAsync(evs ...*pb.Event) (<-chan *pb.Ack, error) {
	if len(evs) == 0 {
		return nil, errors.New("simsidecar: empty batch")
	}
	// Numbering and sending under sendMu keeps seq in stream order.
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	for _, e := range evs {
		e.Seq = s.seq.Add(1)
	}
	w := make(chan *pb.Ack, 1)
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return nil, s.err
	}
	s.startWaitLocked()
	s.waiters[evs[len(evs)-1].Seq] = w
	s.mu.Unlock()
	if err := s.stream.Send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Events{Events: &pb.EventBatch{Events: evs}}}); err != nil {
		return nil, err
	}
	return w, nil
}

func (s *Sidecar) send(m *pb.SidecarMessage) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.stream.Send(m)
}

// SetAutoAck turns the automatic RoutingAck on or off.
func (s *Sidecar) SetAutoAck(on bool) {
	s.mu.Lock()
	s.autoAck = on
	s.mu.Unlock()
}

// AckRouting acknowledges a routing revision.
func (s *Sidecar) AckRouting(rev uint64) error {
	return s.send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_RoutingAck{RoutingAck: &pb.RoutingAck{Revision: rev}}})
}

// applyRouting returns the table that results from applying r (a snapshot
// or a delta) to the current table cur, or nil if r is older than cur. The
// result is always a full table (delta false) of the sidecar's scope, with
// the lanes (kept from cur by a delta that did not change them).
func applyRouting(cur, r *pb.Routing) *pb.Routing {
	if !r.GetDelta() {
		if cur != nil && r.GetRevision() < cur.GetRevision() {
			return nil
		}
		return r
	}
	if cur == nil || r.GetRevision() < cur.GetRevision() {
		return nil // a delta before any snapshot: the coordinator never sends one
	}
	byName := make(map[string]*pb.ServiceRoute, len(cur.GetServices())+len(r.GetServices()))
	for _, sr := range cur.GetServices() {
		byName[sr.GetService()] = sr
	}
	for _, n := range r.GetRemoved() {
		delete(byName, n)
	}
	for _, sr := range r.GetServices() {
		byName[sr.GetService()] = sr
	}
	out := &pb.Routing{Revision: r.GetRevision(), Lanes: cur.GetLanes(), LanesChanged: true}
	if r.GetLanesChanged() {
		out.Lanes = r.GetLanes()
	}
	for _, n := range slices.Sorted(maps.Keys(byName)) {
		out.Services = append(out.Services, byName[n])
	}
	return out
}

// Routing returns the newest routing table received (nil before the
// first): the snapshot with every delta since applied.
func (s *Sidecar) Routing() *pb.Routing {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.routing
}

// Route returns the newest route of service (nil if the table has none).
func (s *Sidecar) Route(service string) *pb.ServiceRoute {
	for _, r := range s.Routing().GetServices() {
		if r.Service == service {
			return r
		}
	}
	return nil
}

// WaitRouting waits until the newest routing table satisfies cond.
func (s *Sidecar) WaitRouting(ctx context.Context, cond func(*pb.Routing) bool) error {
	for {
		s.mu.Lock()
		r, ch := s.routing, s.routingCh
		s.mu.Unlock()
		if r != nil && cond(r) {
			return nil
		}
		select {
		case <-ch:
		case <-s.done:
			return fmt.Errorf("simsidecar: stream ended: %w", s.Err())
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// SendWait sends a CALL with wait set as a batch of its own and returns
// the channel its CallDecision arrives on (closed if the stream ends), and
// the batch's Ack channel.
func (s *Sidecar) SendWait(ev *pb.Event) (<-chan *pb.CallDecision, <-chan *pb.Ack, error) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	ev.Wait = true
	ev.Seq = s.seq.Add(1)
	d := make(chan *pb.CallDecision, 1)
	a := make(chan *pb.Ack, 1)
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return nil, nil, s.err
	}
	s.decisions[ev.Seq] = d
	s.startWaitLocked()
	s.waiters[ev.Seq] = a
	s.mu.Unlock()
	if err := s.stream.Send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Events{Events: &pb.EventBatch{Events: []*pb.Event{ev}}}}); err != nil {
		return nil, nil, err
	}
	return d, a, nil
}

// Send sends one batch and waits for its Ack.
func (s *Sidecar) Send(ctx context.Context, evs ...*pb.Event) (*pb.Ack, error) {
	w, err := s.SendAsync(evs...)
	if err != nil {
		return nil, err
	}
	select {
	case a, ok := <-w:
		if !ok {
			return nil, fmt.Errorf("simsidecar: stream ended: %w", s.Err())
		}
		return a, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Heartbeat sends a heartbeat and waits for its answer.
func (s *Sidecar) Heartbeat(ctx context.Context) (*pb.HeartbeatAck, error) {
	if err := s.send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Heartbeat{Heartbeat: &pb.Heartbeat{}}}); err != nil {
		return nil, err
	}
	select {
	case a := <-s.hb:
		return a, nil
	case <-s.done:
		return nil, fmt.Errorf("simsidecar: stream ended: %w", s.Err())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Deregister ends the session as a sidecar shutting down cleanly does: it
// sends Deregister, waits for the answer and for the coordinator to end the
// stream.
func (s *Sidecar) Deregister(ctx context.Context, reason string) (*pb.Deregistered, error) {
	if err := s.send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Deregister{Deregister: &pb.Deregister{Reason: reason}}}); err != nil {
		return nil, err
	}
	var d *pb.Deregistered
	select {
	case d = <-s.dereg:
	case <-s.done:
		return nil, fmt.Errorf("simsidecar: stream ended before Deregistered: %w", s.Err())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case <-s.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := s.Err(); !errors.Is(err, io.EOF) {
		return d, fmt.Errorf("simsidecar: stream after Deregistered: %w", err)
	}
	return d, nil
}

// Close ends the stream (the session keeps its lease until the TTL).
func (s *Sidecar) Close() {
	s.sendMu.Lock()
	_ = s.stream.CloseSend()
	s.sendMu.Unlock()
	s.cancel()
	<-s.done
}

// RouteCall does what a sidecar does before an outbound call of txn from
// sub caller to service `to`, creating sub: if `to` is in update mode, or
// outside its routing scope (not in its table), it sends the CALL with
// wait and returns the version of the CallDecision; otherwise it sends the
// CALL naming the default version and returns that at once. It returns an
// error if the decision carries one.
func (s *Sidecar) RouteCall(ctx context.Context, txn string, caller uint64, to string, sub uint64) (string, error) {
	s.routeMu.RLock()
	r := s.Route(to)
	ev := Call(txn, caller, to, sub)
	if r != nil && !r.UpdateMode {
		ev.Version = r.DefaultVersion
		_, err := s.SendAsync(ev)
		s.routeMu.RUnlock()
		return ev.Version, err
	}
	d, _, err := s.SendWait(ev)
	s.routeMu.RUnlock()
	if err != nil {
		return "", err
	}
	select {
	case dec, ok := <-d:
		if !ok {
			return "", fmt.Errorf("simsidecar: stream ended: %w", s.Err())
		}
		if dec.Error != "" {
			return "", fmt.Errorf("simsidecar: call refused: %s", dec.Error)
		}
		return dec.Version, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Begin, Call, Return, Done and End build events; the calling side is
// always the sidecar's own service.
func Begin(txn string, sub uint64) *pb.Event {
	return &pb.Event{Type: pb.EventType_EVENT_TYPE_BEGIN, TxnId: txn, SubId: sub}
}

// Call: caller (running here) calls service `to`, creating sub there.
func Call(txn string, caller uint64, to string, sub uint64) *pb.Event {
	return &pb.Event{Type: pb.EventType_EVENT_TYPE_CALL, TxnId: txn, CallerSubId: caller, Service: to, SubId: sub}
}

// Return: sub (called from here) returned.
func Return(txn string, sub uint64) *pb.Event {
	return &pb.Event{Type: pb.EventType_EVENT_TYPE_RETURN, TxnId: txn, SubId: sub}
}

// Done: sub (running here) will not call `to` again.
func Done(txn string, sub uint64, to string) *pb.Event {
	return &pb.Event{Type: pb.EventType_EVENT_TYPE_DONE, TxnId: txn, SubId: sub, Service: to}
}

// End: root txn finished.
func End(txn string) *pb.Event {
	return &pb.Event{Type: pb.EventType_EVENT_TYPE_END, TxnId: txn}
}

// RateRefused counts the events of ack refused for the session's event
// rate (each event of a run error counts).
func RateRefused(ack *pb.Ack) int { return RefusedFor(ack, "--max-events-per-second") }

// RefusedFor counts the events of ack refused (ResourceExhausted) by the
// quota that flag sets (each event of a run error counts).
func RefusedFor(ack *pb.Ack, flag string) int {
	n := 0
	for _, e := range ack.Errors {
		if codes.Code(e.Code) == codes.ResourceExhausted && strings.Contains(e.Message, flag) {
			n += int(max(e.ThroughSeq, e.Seq) - e.Seq + 1)
		}
	}
	return n
}
