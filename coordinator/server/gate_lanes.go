package server

import (
	"context"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Lanes (DESIGN.md §4.9) live in the leader's memory: every lane request
// goes to the leader, as the update requests do.

func (g adminGate) CreateLane(ctx context.Context, r *pb.CreateLaneRequest) (*pb.Lane, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.Lane, error) { return a.CreateLane(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.Lane, error) { return a.CreateLane(ctx, r) })
}

func (g adminGate) ListLanes(ctx context.Context, r *pb.ListLanesRequest) (*pb.ListLanesResponse, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.ListLanesResponse, error) { return a.ListLanes(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.ListLanesResponse, error) {
			return a.ListLanes(ctx, r)
		})
}

func (g adminGate) DeleteLane(ctx context.Context, r *pb.DeleteLaneRequest) (*pb.Lane, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.Lane, error) { return a.DeleteLane(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.Lane, error) { return a.DeleteLane(ctx, r) })
}

func (g adminGate) PromoteLane(ctx context.Context, r *pb.PromoteLaneRequest) (*pb.Update, error) {
	return route(ctx, g, func(a pb.AdminServiceServer) (*pb.Update, error) { return a.PromoteLane(ctx, r) },
		func(ctx context.Context, a pb.AdminServiceClient) (*pb.Update, error) { return a.PromoteLane(ctx, r) })
}
