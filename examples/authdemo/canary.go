package main

import (
	"fmt"
	"log"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// canaryRequest makes req the canary --canary and --canary-step ask for.
func canaryRequest(req *pb.StartUpdateRequest, o options) error {
	if req.Strategy != pb.Strategy_STRATEGY_CV {
		return fmt.Errorf("--canary needs --strategy=cv: a canary is cv with weights")
	}
	if o.canaryStep <= 0 {
		return fmt.Errorf("--canary-step must be positive")
	}
	for _, s := range strings.Split(o.canary, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
		if err != nil {
			return fmt.Errorf("--canary %q: %q is not a percentage", o.canary, s)
		}
		req.CanarySteps = append(req.CanarySteps, uint32(n))
	}
	req.StepInterval = durationpb.New(o.canaryStep)
	return nil
}

// logCanary logs each step of a canary update of subject (Auth, or the
// set): the weight asked, and the share of the transactions new to it that
// it assigned the new version.
func logCanary(u *pb.Update, subject string) {
	for i, s := range u.GetCanary().GetStepsServed() {
		n := s.GetOldTransactions() + s.GetNewTransactions()
		served := 0.0
		if n > 0 {
			served = 100 * float64(s.GetNewTransactions()) / float64(n)
		}
		log.Printf("canary step %d: asked %d%%, served %.1f%% of %d transactions new to %s", i+1, s.GetPercent(), served, n, subject)
	}
}
