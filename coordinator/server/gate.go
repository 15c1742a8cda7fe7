package server

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The gate is what a replica serves on gRPC whatever its role. On the
// leader it hands sidecar streams and admin calls to the coordinator. On a
// follower it answers a sidecar's Register with a Redirect to the leader,
// and forwards admin calls to the leader, so that coordctl and REST work
// against any replica; GetCluster is answered by every replica itself.

var errNoLeader = errors.New("server: no leader elected yet")

func noLeader() error {
	return status.Error(codes.Unavailable, "no coordinator leader elected yet; retry")
}

type sidecarGate struct {
	pb.UnimplementedSidecarServiceServer
	s *Server
}

// Connect serves a sidecar stream. With a client CA configured, the
// stream's client certificate is checked first (authenticate), and the
// identity it names is in the context of the stream the coordinator gets
// (identity.FromContext).
func (g sidecarGate) Connect(srv pb.SidecarService_ConnectServer) error {
	srv, err := g.s.authenticate(srv)
	if err != nil {
		return err
	}
	if h := g.s.connectHook.Load(); h != nil {
		(*h)(srv.Context())
	}
	release, err := g.s.streamLimits.acquire(srv.Context())
	if err != nil {
		return err
	}
	defer release()
	if c := g.s.Leader(); c != nil {
		return c.SidecarServer().Connect(srv)
	}
	// A follower: read the Register, answer where the leader is.
	first := make(chan error, 1)
	go func() {
		_, err := srv.Recv()
		first <- err
	}()
	t := time.NewTimer(g.s.ccfg.RegisterTimeoutOrDefault())
	defer t.Stop()
	select {
	case err := <-first:
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	case <-t.C:
		return status.Errorf(codes.DeadlineExceeded, "no Register within %v of opening the stream", g.s.ccfg.RegisterTimeoutOrDefault())
	}
	l := g.s.LeaderInfo()
	if l == nil || l.Name == g.s.self.Name {
		return noLeader() // none yet, or this replica is taking over
	}
	g.s.metrics.redirects.Inc()
	return srv.Send(&pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_Redirect{
		Redirect: &pb.Redirect{LeaderAddress: l.GrpcAddress}}})
}

type adminGate struct {
	pb.UnimplementedAdminServiceServer
	s *Server
}

// route calls the local coordinator when leading, else the leader, with
// the caller's principal (or token) in ctx's outgoing metadata
// (adminauth: the leader checks and audits the call).
func route[R any](ctx context.Context, g adminGate, local func(pb.AdminServiceServer) (R, error), remote func(context.Context, pb.AdminServiceClient) (R, error)) (R, error) {
	if c := g.s.Leader(); c != nil {
		return local(c.AdminServer())
	}
	var zero R
	if l := g.s.LeaderInfo(); l == nil || l.Name == g.s.self.Name {
		return zero, noLeader()
	}
	conn, _, err := g.s.forwardConn()
	if errors.Is(err, errNoLeader) {
		return zero, noLeader()
	}
	if err != nil {
		return zero, status.Errorf(codes.Unavailable, "forward to the leader: %v", err)
	}
	return remote(g.s.auth.OutgoingContext(ctx), pb.NewAdminServiceClient(conn))
}

// GetCluster is answered locally by every replica.
func (g adminGate) GetCluster(ctx context.Context, _ *pb.GetClusterRequest) (*pb.Cluster, error) {
	v, err := ClusterView(ctx, g.s.cli, g.s.keys.Election(), g.s.self.Name)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "cluster view: %v", err)
	}
	return v, nil
}

// WatchUpdate streams from the local coordinator, or relays the leader's stream.
func (g adminGate) WatchUpdate(req *pb.WatchUpdateRequest, srv pb.AdminService_WatchUpdateServer) error {
	if c := g.s.Leader(); c != nil {
		return c.AdminServer().WatchUpdate(req, srv)
	}
	if l := g.s.LeaderInfo(); l == nil || l.Name == g.s.self.Name {
		return noLeader()
	}
	conn, _, err := g.s.forwardConn()
	if err != nil {
		return noLeader()
	}
	stream, err := pb.NewAdminServiceClient(conn).WatchUpdate(g.s.auth.OutgoingContext(srv.Context()), req)
	if err != nil {
		return err
	}
	for {
		u, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := srv.Send(u); err != nil {
			return err
		}
	}
}

func (g adminGate) GetFreeness(ctx context.Context, r *pb.GetFreenessRequest) (*pb.Freeness, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.Freeness, error) { return a.GetFreeness(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.Freeness, error) { return a.GetFreeness(ctx, r) })
}

func (g adminGate) GetGraph(ctx context.Context, r *pb.GetGraphRequest) (*pb.Graph, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.Graph, error) { return a.GetGraph(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.Graph, error) { return a.GetGraph(ctx, r) })
}

func (g adminGate) ListSessions(ctx context.Context, r *pb.ListSessionsRequest) (*pb.ListSessionsResponse, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.ListSessionsResponse, error) { return a.ListSessions(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.ListSessionsResponse, error) {
			return a.ListSessions(ctx, r)
		})
}

func (g adminGate) ListTransactions(ctx context.Context, r *pb.ListTransactionsRequest) (*pb.ListTransactionsResponse, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.ListTransactionsResponse, error) { return a.ListTransactions(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.ListTransactionsResponse, error) {
			return a.ListTransactions(ctx, r)
		})
}

func (g adminGate) StartUpdate(ctx context.Context, r *pb.StartUpdateRequest) (*pb.Update, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.Update, error) { return a.StartUpdate(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.Update, error) { return a.StartUpdate(ctx, r) })
}

func (g adminGate) GetUpdate(ctx context.Context, r *pb.GetUpdateRequest) (*pb.Update, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.Update, error) { return a.GetUpdate(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.Update, error) { return a.GetUpdate(ctx, r) })
}

func (g adminGate) ListUpdates(ctx context.Context, r *pb.ListUpdatesRequest) (*pb.ListUpdatesResponse, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.ListUpdatesResponse, error) { return a.ListUpdates(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.ListUpdatesResponse, error) {
			return a.ListUpdates(ctx, r)
		})
}

func (g adminGate) AbortUpdate(ctx context.Context, r *pb.AbortUpdateRequest) (*pb.Update, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.Update, error) { return a.AbortUpdate(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.Update, error) { return a.AbortUpdate(ctx, r) })
}

func (g adminGate) GetSelfPreservation(ctx context.Context, r *pb.GetSelfPreservationRequest) (*pb.SelfPreservation, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.SelfPreservation, error) { return a.GetSelfPreservation(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.SelfPreservation, error) {
			return a.GetSelfPreservation(ctx, r)
		})
}

func (g adminGate) EndSelfPreservation(ctx context.Context, r *pb.EndSelfPreservationRequest) (*pb.SelfPreservation, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.SelfPreservation, error) { return a.EndSelfPreservation(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.SelfPreservation, error) {
			return a.EndSelfPreservation(ctx, r)
		})
}

func (g adminGate) ListServices(ctx context.Context, r *pb.ListServicesRequest) (*pb.ListServicesResponse, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.ListServicesResponse, error) { return a.ListServices(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.ListServicesResponse, error) {
			return a.ListServices(ctx, r)
		})
}

func (g adminGate) GetService(ctx context.Context, r *pb.GetServiceRequest) (*pb.ServiceState, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.ServiceState, error) { return a.GetService(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.ServiceState, error) {
			return a.GetService(ctx, r)
		})
}

func (g adminGate) GetServiceIstio(ctx context.Context, r *pb.GetServiceIstioRequest) (*httpbody.HttpBody, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*httpbody.HttpBody, error) { return a.GetServiceIstio(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*httpbody.HttpBody, error) {
			return a.GetServiceIstio(ctx, r)
		})
}

func (g adminGate) DryRunUpdate(ctx context.Context, r *pb.StartUpdateRequest) (*pb.UpdatePlan, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.UpdatePlan, error) { return a.DryRunUpdate(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.UpdatePlan, error) {
			return a.DryRunUpdate(ctx, r)
		})
}
