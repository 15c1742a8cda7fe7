package coordinator

import (
	"context"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The operators' controls of a canary update (DESIGN.md §4.7; canary.go):
// promote, pause, resume. Abort is AbortUpdate's: in a canary step it is
// a rollback.

func (a admin) PromoteUpdate(ctx context.Context, req *pb.PromoteUpdateRequest) (*pb.Update, error) {
	return a.c.orch.canaryControl(ctx, req.GetId(), "promote")
}

func (a admin) PauseUpdate(ctx context.Context, req *pb.PauseUpdateRequest) (*pb.Update, error) {
	return a.c.orch.canaryControl(ctx, req.GetId(), "pause")
}

func (a admin) ResumeUpdate(ctx context.Context, req *pb.ResumeUpdateRequest) (*pb.Update, error) {
	return a.c.orch.canaryControl(ctx, req.GetId(), "resume")
}

func (s adminServer) PromoteUpdate(ctx context.Context, r *pb.PromoteUpdateRequest) (*pb.Update, error) {
	return answer(s.a.PromoteUpdate(ctx, r))
}

func (s adminServer) PauseUpdate(ctx context.Context, r *pb.PauseUpdateRequest) (*pb.Update, error) {
	return answer(s.a.PauseUpdate(ctx, r))
}

func (s adminServer) ResumeUpdate(ctx context.Context, r *pb.ResumeUpdateRequest) (*pb.Update, error) {
	return answer(s.a.ResumeUpdate(ctx, r))
}
