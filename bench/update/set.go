package main

import (
	"github.com/coordinator/coordinator/internal/loadsim"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The set update of -strategies set: svc-c and its callee svc-d move to v2
// together. svc-d is also called through svc-b, so a transaction can use
// svc-c on one path and svc-d later on another: the case set freeness and
// the set's pins are for.
var (
	setInstances = []string{"svc-c@v2"}
	updatedSet   = loadsim.Set{"svc-c": {"v1", "v2"}, "svc-d": {"v1", "v2"}}
)

var setStrategyOf = map[string]pb.Strategy{"cv": pb.Strategy_STRATEGY_CV, "bf": pb.Strategy_STRATEGY_BF,
	"wf": pb.Strategy_STRATEGY_WF, "naive": pb.Strategy_STRATEGY_NAIVE}

// setMembers is the set update's request.
func setMembers() []*pb.ServiceVersion {
	return []*pb.ServiceVersion{{Service: "svc-c", Version: "v2"}, {Service: "svc-d", Version: "v2"}}
}
