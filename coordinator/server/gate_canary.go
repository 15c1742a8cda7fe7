package server

import (
	"context"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// A canary's controls go to the leader, as AbortUpdate does.

func (g adminGate) PromoteUpdate(ctx context.Context, r *pb.PromoteUpdateRequest) (*pb.Update, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.Update, error) { return a.PromoteUpdate(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.Update, error) { return a.PromoteUpdate(ctx, r) })
}

func (g adminGate) PauseUpdate(ctx context.Context, r *pb.PauseUpdateRequest) (*pb.Update, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.Update, error) { return a.PauseUpdate(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.Update, error) { return a.PauseUpdate(ctx, r) })
}

func (g adminGate) ResumeUpdate(ctx context.Context, r *pb.ResumeUpdateRequest) (*pb.Update, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.Update, error) { return a.ResumeUpdate(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.Update, error) { return a.ResumeUpdate(ctx, r) })
}
