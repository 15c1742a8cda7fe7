package coordinator

import (
	"context"

	"google.golang.org/genproto/googleapis/api/httpbody"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The gRPC edge: what the coordinator answers on gRPC is the domain's
// answer, its error turned into a status by toGRPCError (errors.go) here
// and nowhere else. The sidecar stream does the same (sidecarServer.Connect
// and eventError).

// AdminServer returns the gRPC AdminService implementation. Every read is
// served from memory.
func (c *Coordinator) AdminServer() pb.AdminServiceServer { return adminServer{a: admin{c: c}} }

// adminServer is the gRPC face of admin: each method calls admin's and
// converts its error.
type adminServer struct {
	pb.UnimplementedAdminServiceServer
	a admin
}

// admin serves the operators' requests; its errors are domain errors.
type admin struct{ c *Coordinator }

// answer returns the domain's answer with its error as a gRPC status.
func answer[R any](r R, err error) (R, error) {
	if err != nil {
		var zero R
		return zero, toGRPCError(err)
	}
	return r, nil
}

func (s adminServer) GetFreeness(ctx context.Context, r *pb.GetFreenessRequest) (*pb.Freeness, error) {
	return answer(s.a.GetFreeness(ctx, r))
}

func (s adminServer) GetGraph(ctx context.Context, r *pb.GetGraphRequest) (*pb.Graph, error) {
	return answer(s.a.GetGraph(ctx, r))
}

func (s adminServer) ListSessions(ctx context.Context, r *pb.ListSessionsRequest) (*pb.ListSessionsResponse, error) {
	return answer(s.a.ListSessions(ctx, r))
}

func (s adminServer) ListTransactions(ctx context.Context, r *pb.ListTransactionsRequest) (*pb.ListTransactionsResponse, error) {
	return answer(s.a.ListTransactions(ctx, r))
}

func (s adminServer) StartUpdate(ctx context.Context, r *pb.StartUpdateRequest) (*pb.Update, error) {
	return answer(s.a.StartUpdate(ctx, r))
}

func (s adminServer) GetUpdate(ctx context.Context, r *pb.GetUpdateRequest) (*pb.Update, error) {
	return answer(s.a.GetUpdate(ctx, r))
}

func (s adminServer) ListUpdates(ctx context.Context, r *pb.ListUpdatesRequest) (*pb.ListUpdatesResponse, error) {
	return answer(s.a.ListUpdates(ctx, r))
}

func (s adminServer) AbortUpdate(ctx context.Context, r *pb.AbortUpdateRequest) (*pb.Update, error) {
	return answer(s.a.AbortUpdate(ctx, r))
}

func (s adminServer) WatchUpdate(r *pb.WatchUpdateRequest, srv pb.AdminService_WatchUpdateServer) error {
	return toGRPCError(s.a.WatchUpdate(r, srv))
}

func (s adminServer) GetSelfPreservation(ctx context.Context, r *pb.GetSelfPreservationRequest) (*pb.SelfPreservation, error) {
	return answer(s.a.GetSelfPreservation(ctx, r))
}

func (s adminServer) EndSelfPreservation(ctx context.Context, r *pb.EndSelfPreservationRequest) (*pb.SelfPreservation, error) {
	return answer(s.a.EndSelfPreservation(ctx, r))
}

func (s adminServer) ListServices(ctx context.Context, r *pb.ListServicesRequest) (*pb.ListServicesResponse, error) {
	return answer(s.a.ListServices(ctx, r))
}

func (s adminServer) GetService(ctx context.Context, r *pb.GetServiceRequest) (*pb.ServiceState, error) {
	return answer(s.a.GetService(ctx, r))
}

func (s adminServer) GetServiceIstio(ctx context.Context, r *pb.GetServiceIstioRequest) (*httpbody.HttpBody, error) {
	return answer(s.a.GetServiceIstio(ctx, r))
}

func (s adminServer) DryRunUpdate(ctx context.Context, r *pb.StartUpdateRequest) (*pb.UpdatePlan, error) {
	return answer(s.a.DryRunUpdate(ctx, r))
}

func (s adminServer) WatchState(r *pb.WatchStateRequest, srv pb.AdminService_WatchStateServer) error {
	return toGRPCError(s.a.WatchState(r, srv))
}
