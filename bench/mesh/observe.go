package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// routingStats counts, over every client, the routing tables received and
// when the last one came.
type routingStats struct {
	tables atomic.Int64
	last   atomic.Int64 // unix nanos
}

// tracker watches one SDK client's coordinator stream on the wire (a gRPC
// stream interceptor: the SDK is used as it is): which default versions of
// the watched services each routing table it receives names, and when the
// client acknowledges (sends the RoutingAck of) a table that changes the
// first one's.
// The SDK applies a table before it queues the table's ack, so the ack's
// send time is when the client holds the table and tells the coordinator.
type tracker struct {
	watched []string
	stats   *routingStats

	mu      sync.Mutex
	held    []string            // the watched services' defaults after the last message received
	pending map[uint64][]string // revision -> the watched services' default versions as of it
	// The second watched service's update mode, as for defaults: held
	// after the last message, by pending revision, and when the client
	// first acknowledged a revision with it set (zero: not since reset).
	modeHeld    bool
	modePending map[uint64]bool
	modeAckedAt time.Time
	modeRecvAt  time.Time // when a revision that set it was first received
	acked       []string  // their defaults in the last acked table
	ackedAt     time.Time // when the first one's default was first acked
}

func newTracker(stats *routingStats, watched ...string) *tracker {
	return &tracker{watched: watched, stats: stats, pending: map[uint64][]string{},
		held: make([]string, len(watched)), acked: make([]string, len(watched)), modePending: map[uint64]bool{}}
}

// ackedDefault is the first watched service's default version in the last
// table the client acknowledged, and when it first acknowledged that
// version.
func (t *tracker) ackedDefault() (string, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.acked[0], t.ackedAt
}

// defaults are the watched services' default versions in the last table
// the client acknowledged.
func (t *tracker) defaults() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.acked...)
}

// received applies r to the watched services' defaults as the client
// holds them: a snapshot names every service of the scope (one it does not
// name has no route), a delta only those that changed (the others keep the
// default of the earlier messages) and those it removes.
func (t *tracker) received(r *pb.Routing) {
	now := time.Now()
	t.stats.tables.Add(1)
	t.stats.last.Store(now.UnixNano())
	t.mu.Lock()
	defer t.mu.Unlock()
	if !r.GetDelta() {
		clear(t.held)
		t.modeHeld = false
	}
	for _, s := range r.GetServices() {
		for i, w := range t.watched {
			if s.GetService() == w {
				t.held[i] = s.GetDefaultVersion()
				if i == 1 {
					t.modeHeld = s.GetUpdateMode()
				}
			}
		}
	}
	for _, gone := range r.GetRemoved() {
		for i, w := range t.watched {
			if gone == w {
				t.held[i] = ""
				if i == 1 {
					t.modeHeld = false
				}
			}
		}
	}
	t.pending[r.GetRevision()] = append([]string(nil), t.held...)
	t.modePending[r.GetRevision()] = t.modeHeld
	if t.modeHeld && t.modeRecvAt.IsZero() {
		t.modeRecvAt = now
	}
}

// updateModeAckedAt is when the client first acknowledged a revision that
// puts the second watched service in update mode, since resetUpdateMode.
func (t *tracker) updateModeAckedAt() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.modeAckedAt
}

// updateModeReceivedAt is when the client first received such a revision.
func (t *tracker) updateModeReceivedAt() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.modeRecvAt
}

// resetUpdateMode forgets when update mode was acknowledged.
func (t *tracker) resetUpdateMode() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.modeAckedAt, t.modeRecvAt = time.Time{}, time.Time{}
}

func (t *tracker) sentAck(rev uint64) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	def, ok := t.pending[rev]
	mode := t.modePending[rev]
	for r := range t.pending {
		if r <= rev {
			delete(t.pending, r)
			delete(t.modePending, r)
		}
	}
	if ok && mode && t.modeAckedAt.IsZero() {
		t.modeAckedAt = now
	}
	if ok {
		if def[0] != t.acked[0] {
			t.ackedAt = now
		}
		t.acked = def
	}
}

// dialOption installs the tracker on the client's streams.
func (t *tracker) dialOption() grpc.DialOption {
	return grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
		streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &observed{ClientStream: cs, t: t}, nil
	})
}

type observed struct {
	grpc.ClientStream
	t *tracker
}

func (o *observed) RecvMsg(m any) error {
	err := o.ClientStream.RecvMsg(m)
	if err == nil {
		if cm, ok := m.(*pb.CoordinatorMessage); ok {
			if r := cm.GetRouting(); r != nil {
				o.t.received(r)
			}
		}
	}
	return err
}

func (o *observed) SendMsg(m any) error {
	sm, ok := m.(*pb.SidecarMessage)
	var ack *pb.RoutingAck
	if ok {
		ack = sm.GetRoutingAck()
	}
	err := o.ClientStream.SendMsg(m)
	if err == nil && ack != nil {
		o.t.sentAck(ack.GetRevision())
	}
	return err
}
