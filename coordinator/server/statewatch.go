package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// WatchState on the gate: the coordinator's part of each snapshot comes
// from the local coordinator when leading, else from the leader's stream
// (asked with omit_cluster); the cluster view is this replica's own, as
// GetCluster's is. The gate bounds the streams a replica serves at once
// and how long each lasts, and sends keepalives while nothing changes.

// Defaults of Config.MaxStateWatchers and Config.StateWatchDuration.
const (
	DefaultMaxStateWatchers   = 64
	DefaultStateWatchDuration = 10 * time.Minute
)

var (
	// stateKeepalive is the longest a stream stays silent.
	stateKeepalive = 15 * time.Second
	// stateClusterCheck is how often a stream looks at the cluster view;
	// views are shared by the streams for as long (clusterCache), so the
	// etcd members see one status request per member per period at most.
	stateClusterCheck = time.Second
)

// stateWatch is a replica's bounds on WatchState and the cluster view its
// streams share.
type stateWatch struct {
	max      int
	duration time.Duration

	mu   sync.Mutex
	open int

	cluster clusterCache
}

func newStateWatch(max int, duration time.Duration) *stateWatch {
	if max <= 0 {
		max = DefaultMaxStateWatchers
	}
	if duration <= 0 {
		duration = DefaultStateWatchDuration
	}
	return &stateWatch{max: max, duration: duration}
}

// acquire takes a watcher's place, or says ResourceExhausted when all
// are taken.
func (w *stateWatch) acquire() (release func(), err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.open >= w.max {
		return nil, status.Errorf(codes.ResourceExhausted,
			"this replica serves at most %d state watches at once and all are open; retry later (each ends within %v)", w.max, w.duration)
	}
	w.open++
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			w.open--
			w.mu.Unlock()
		})
	}, nil
}

// clusterCache keeps the last cluster view for stateClusterCheck.
type clusterCache struct {
	mu   sync.Mutex
	at   time.Time
	view *pb.Cluster // shared: not to be changed
	err  error
}

func (s *Server) cachedClusterView(ctx context.Context) (*pb.Cluster, error) {
	cc := &s.stateWatch.cluster
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if !cc.at.IsZero() && time.Since(cc.at) < stateClusterCheck {
		return cc.view, cc.err
	}
	// Not the caller's context alone: the view is shared.
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*memberStatusTimeout)
	defer cancel()
	cc.view, cc.err = ClusterView(vctx, s.cli, s.keys.Election(), s.self.Name)
	cc.at = time.Now()
	return cc.view, cc.err
}

// sameCluster compares cluster views but for the members' raft index,
// which moves with every etcd write and is not a change worth a snapshot.
func sameCluster(a, b *pb.Cluster) bool {
	strip := func(c *pb.Cluster) *pb.Cluster {
		if c == nil {
			return nil
		}
		c = proto.CloneOf(c)
		for _, m := range c.Members {
			m.RaftIndex = 0
		}
		return c
	}
	return proto.Equal(strip(a), strip(b))
}

// WatchState streams the state: see the proto and the comment above.
func (g adminGate) WatchState(req *pb.WatchStateRequest, srv pb.AdminService_WatchStateServer) error {
	release, err := g.s.stateWatch.acquire()
	if err != nil {
		return err
	}
	defer release()
	ctx, cancel := context.WithTimeout(srv.Context(), g.s.stateWatch.duration)
	defer cancel()

	coord := make(chan *pb.StateSnapshot)
	coordErr := make(chan error, 1)
	inner := &pb.WatchStateRequest{ServiceLimit: req.GetServiceLimit(), OmitCluster: true}
	go func() { coordErr <- g.coordinatorState(ctx, inner, srv, coord) }()
	type clusterPart struct {
		view *pb.Cluster
		err  error
	}
	clusters := make(chan clusterPart)
	if !req.GetOmitCluster() {
		go func() {
			t := time.NewTicker(stateClusterCheck)
			defer t.Stop()
			var last *pb.Cluster
			first := true
			for {
				v, err := g.s.cachedClusterView(ctx)
				if first || err != nil || !sameCluster(last, v) {
					select {
					case clusters <- clusterPart{v, err}:
					case <-ctx.Done():
						return
					}
					first, last = false, v
				}
				select {
				case <-t.C:
				case <-ctx.Done():
					return
				}
			}
		}()
	}

	var (
		part       *pb.StateSnapshot // the coordinator's, last received
		cluster    *pb.Cluster
		clusterErr string
		clusterIn  = req.GetOmitCluster() // a cluster view received (or none wanted)
		lastErr    string
	)
	keep := time.NewTimer(stateKeepalive)
	defer keep.Stop()
	send := func(m *pb.WatchStateResponse) error {
		keep.Reset(stateKeepalive)
		return srv.Send(m)
	}
	for {
		changed := false
		select {
		case p := <-coord:
			part, changed = p, true
		case c := <-clusters:
			msg := ""
			if c.err != nil {
				msg = fmt.Sprintf("cluster view: %v", c.err)
			}
			// An error repeated is not a change.
			changed = !clusterIn || msg != lastErr || (c.err == nil && !sameCluster(cluster, c.view))
			clusterIn, lastErr = true, msg
			if c.err == nil {
				cluster, clusterErr = c.view, ""
			} else {
				cluster, clusterErr = nil, msg
			}
		case err := <-coordErr:
			if err == nil || (ctx.Err() != nil && srv.Context().Err() == nil) {
				return nil // the leader's stream ended, or this one's time is up: the client reconnects
			}
			return err
		case <-keep.C:
			if err := send(&pb.WatchStateResponse{Event: &pb.WatchStateResponse_Keepalive{
				Keepalive: &pb.StateKeepalive{At: timestamppb.Now()}}}); err != nil {
				return err
			}
			continue
		case <-ctx.Done():
			if srv.Context().Err() != nil {
				return srv.Context().Err()
			}
			return nil // max duration: end OK, the client reconnects
		}
		if !changed || part == nil || !clusterIn {
			continue // the first snapshot has every part
		}
		snap := proto.CloneOf(part)
		snap.Cluster, snap.ClusterError = cluster, clusterErr
		if err := send(&pb.WatchStateResponse{Event: &pb.WatchStateResponse_Snapshot{Snapshot: snap}}); err != nil {
			return err
		}
	}
}

// coordinatorState sends the coordinator's part of the state to out
// whenever it changes: the local coordinator's when leading, else the
// leader's, relayed.
func (g adminGate) coordinatorState(ctx context.Context, req *pb.WatchStateRequest, srv pb.AdminService_WatchStateServer, out chan<- *pb.StateSnapshot) error {
	if c := g.s.Leader(); c != nil {
		return c.AdminServer().WatchState(req, &partStream{AdminService_WatchStateServer: srv, ctx: ctx, out: out})
	}
	if l := g.s.LeaderInfo(); l == nil || l.Name == g.s.self.Name {
		return noLeader()
	}
	conn, _, err := g.s.forwardConn()
	if err != nil {
		return noLeader()
	}
	stream, err := pb.NewAdminServiceClient(conn).WatchState(g.s.auth.OutgoingContext(ctx), req)
	if err != nil {
		return err
	}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		snap := m.GetSnapshot()
		if snap == nil {
			continue // the leader's keepalive: this gate sends its own
		}
		select {
		case out <- snap:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// partStream hands the local coordinator's snapshots to the gate's loop
// instead of sending them.
type partStream struct {
	pb.AdminService_WatchStateServer
	ctx context.Context
	out chan<- *pb.StateSnapshot
}

func (p *partStream) Context() context.Context { return p.ctx }

func (p *partStream) Send(m *pb.WatchStateResponse) error {
	snap := m.GetSnapshot()
	if snap == nil {
		return nil
	}
	select {
	case p.out <- snap:
		return nil
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
}
