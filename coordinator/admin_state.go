package coordinator

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The state watch (WatchState): the coordinator's part of what the web
// view shows, sent when it changes. The coordinator has no single change
// signal that covers sessions, transactions, edges and updates alike, so
// each watcher copies the state every stateCheck and sends it when it
// differs from what it sent last. Watchers share the copies (stateMemo):
// however many there are, the state is copied about 1/stateShare times a
// second. Each part is copied by the admin call
// that answers it alone (ListServices, GetFreeness, ListUpdates, ...), each
// under its own hold of the event lock, so a watcher never holds the lock
// longer than ListServices does. The server's gate bounds the watchers,
// adds the cluster view and keepalives, and ends streams after a while.

const (
	defaultStateServices = 1000
	// stateBlocked bounds the services whose blockers a snapshot lists.
	stateBlocked = 50
	// stateCheck is how often a watcher looks for a change.
	stateCheck = 250 * time.Millisecond
	// stateShare: a copy this recent is given to another watcher as is.
	stateShare = 200 * time.Millisecond
)

// stateMemo is the last copy of the state, by service limit. Copies are
// not changed once made: watchers share them.
type stateMemo struct {
	mu   sync.Mutex
	n    int
	at   time.Time
	snap *pb.StateSnapshot
}

// WatchState sends the coordinator's part of the state at once, then
// whenever it changes; it never sends the cluster view (the gate adds
// it) nor keepalives (the gate sends them).
func (a admin) WatchState(req *pb.WatchStateRequest, srv pb.AdminService_WatchStateServer) error {
	n, err := limit(req.GetServiceLimit(), defaultStateServices, maxServiceLimit, "service_limit")
	if err != nil {
		return err
	}
	c := a.c
	ctx := srv.Context()
	tick := time.NewTicker(stateCheck)
	defer tick.Stop()
	var last *pb.StateSnapshot
	for {
		snap, err := a.sharedStateSnapshot(ctx, n)
		if err != nil {
			return err
		}
		if last == nil || !proto.Equal(last, snap) {
			if err := srv.Send(&pb.WatchStateResponse{Event: &pb.WatchStateResponse_Snapshot{Snapshot: snap}}); err != nil {
				return err
			}
			last = snap
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.ctx.Done():
			return errShuttingDown
		case <-tick.C:
		}
	}
}

// sharedStateSnapshot returns a copy made less than stateShare ago for
// the same n, else a new one (then kept).
func (a admin) sharedStateSnapshot(ctx context.Context, n int) (*pb.StateSnapshot, error) {
	m := &a.c.stateMemo
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.snap != nil && m.n == n && time.Since(m.at) < stateShare {
		return m.snap, nil
	}
	snap, err := a.stateSnapshot(ctx, n)
	if err != nil {
		return nil, err
	}
	m.n, m.at, m.snap = n, time.Now(), snap
	return snap, nil
}

// stateSnapshot copies the coordinator's part of a snapshot, with up to n
// services.
func (a admin) stateSnapshot(ctx context.Context, n int) (*pb.StateSnapshot, error) {
	svcs, err := a.ListServices(ctx, &pb.ListServicesRequest{Limit: uint32(n)})
	if err != nil {
		return nil, err
	}
	snap := &pb.StateSnapshot{Services: svcs.GetServices(), ServicesTotal: svcs.GetTotal()}
	names := make([]string, 0, len(snap.Services))
	for _, s := range snap.Services {
		names = append(names, s.GetName())
	}
	snap.Edges, snap.LiveTransactions = a.c.edgesAmong(names)
	for _, s := range snap.Services {
		if s.GetFree() || len(snap.Blocked) == stateBlocked {
			continue
		}
		f, err := a.GetFreeness(ctx, &pb.GetFreenessRequest{Service: s.GetName()})
		if err != nil {
			continue // removed since ListServices
		}
		snap.Blocked = append(snap.Blocked, f)
	}
	ups, err := a.ListUpdates(ctx, &pb.ListUpdatesRequest{})
	if err != nil {
		return nil, err
	}
	snap.Updates = ups.GetUpdates()
	if snap.SelfPreservation, err = a.GetSelfPreservation(ctx, &pb.GetSelfPreservationRequest{}); err != nil {
		return nil, err
	}
	return snap, nil
}

// edgesAmong returns the static graph's edges between the named services
// (sorted as GetGraph sorts them), and the live transactions in all.
func (c *Coordinator) edgesAmong(names []string) ([]*pb.Edge, uint32) {
	var out []*pb.Edge
	c.mu.Lock()
	live := uint32(c.eng.Live())
	ids := make(map[graph.ServiceID]bool, len(names))
	for _, name := range names {
		if s, ok := c.eng.LookupService(name); ok {
			ids[s] = true
		}
	}
	for s := range ids {
		for _, to := range c.eng.Successors(s) {
			if ids[to] {
				out = append(out, &pb.Edge{From: c.eng.ServiceName(s), To: c.eng.ServiceName(to), Learned: !c.cat.isDeclared(edge{s, to})})
			}
		}
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b *pb.Edge) int {
		if d := strings.Compare(a.From, b.From); d != 0 {
			return d
		}
		return strings.Compare(a.To, b.To)
	})
	return out, live
}
