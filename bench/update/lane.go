package main

import (
	"math/rand/v2"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The lane of -strategies lane (DESIGN.md §4.9): gray runs svc-c and svc-d
// at v2; laneShare of the roots enter tagged x-lane: gray. The run
// promotes it (one set update of svc-c and svc-d, setInstances and
// updatedSet) under each strategy of -lane-under, while lane transactions
// keep running on v2 of both and the others move by the strategy.
const laneShare = 0.3

func laneDef() *pb.Lane {
	return &pb.Lane{Name: "gray", Members: setMembers()}
}

// laneTag tags laneShare of the roots.
func laneTag(rng *rand.Rand) (header, tag string, ok bool) {
	return "x-lane", "gray", rng.Float64() < laneShare
}
