package coordinator

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/strategy"
)

// Dry run (DryRunUpdate): what StartUpdate with the same request would do
// now, read under the event lock with the checks StartUpdate makes
// (checkStart, startableLocked); nothing is reserved, stored or changed.

// dryRunBlockers bounds the blockers a plan names.
const dryRunBlockers = defaultBlockerLimit

func (a admin) DryRunUpdate(ctx context.Context, req *pb.StartUpdateRequest) (*pb.UpdatePlan, error) {
	o := a.c.orch
	if len(req.GetMembers()) > 0 {
		return nil, fmt.Errorf("%w: a dry run takes one service (service and to_version), not members", ErrInvalidArgument)
	}
	opts, err := o.checkStart(req)
	if err != nil {
		return nil, err
	}
	c := a.c
	c.mu.Lock()
	defer c.mu.Unlock()
	svc, ok := c.eng.LookupService(req.Service)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownService, req.Service)
	}
	plan := &pb.UpdatePlan{
		Service: req.Service, ToVersion: req.ToVersion, Strategy: opts.kind,
		Timeout: durationpb.New(opts.timeout), MaxBlock: durationpb.New(opts.maxBlock),
		PrepareTimeout: durationpb.New(opts.prepareTimeout),
	}
	if c.cat.routed(svc) {
		plan.FromVersion = c.eng.VersionName(c.cat.defaultVersion(svc))
	}
	if _, _, _, err := o.startableLocked(req.Service, req.ToVersion); err != nil {
		plan.Refused = err.Error()
	} else {
		plan.WouldStart = true
	}
	if u := o.upd.active(svc); u != nil {
		plan.InProgress = o.snapshotLocked(u)
	}
	for s := range c.sess.ofService(svc) {
		if s.rec.Version != req.ToVersion {
			continue
		}
		plan.TargetInstances++
		if s.stream != nil {
			plan.TargetConnected++
			if s.ackedRev >= s.snapRev {
				plan.TargetAcknowledged++
			}
		}
	}
	plan.Free = c.eng.Free(svc) && c.sess.resyncPending() == 0
	plan.Blocking = uint32(c.eng.BlockerCount(svc))
	for _, b := range c.eng.Blockers(svc, dryRunBlockers) {
		plan.Blockers = append(plan.Blockers, c.blockerLocked(svc, b))
	}
	plan.ResyncMissing = uint32(c.sess.resyncPending())
	for from := range c.cat.callersOf(svc) {
		for range c.sess.ofService(from) {
			plan.CallerSessions++
		}
	}
	plan.Constraints = o.constraintsLocked(plan, svc, opts)
	return plan, nil
}

// constraintsLocked says, one line each, what the strategy of opts would
// wait for and bound from now on, given the plan's facts.
func (o *orchestrator) constraintsLocked(plan *pb.UpdatePlan, svc graph.ServiceID, opts startOptions) []string {
	s, from, to := plan.Service, plan.FromVersion, plan.ToVersion
	var out []string
	if hold := o.ev.switchHoldLocked(); hold != "" {
		out = append(out, "switches are held now ("+hold+"): no switch until that ends")
	}
	if opts.strat.UpdateMode() {
		out = append(out, fmt.Sprintf("PREPARING: %s that can call %s must acknowledge update mode (aborts at prepare-timeout %v)",
			count(int(plan.CallerSessions), "session", "sessions"), s, opts.prepareTimeout))
	}
	blocking := fmt.Sprintf("%s is free now", s)
	if !plan.Free {
		blocking = fmt.Sprintf("%s is not free now (%s", s, count(int(plan.Blocking), "transaction blocks it", "transactions block it"))
		if plan.ResyncMissing > 0 {
			blocking += fmt.Sprintf(", %s not back since the failover", count(int(plan.ResyncMissing), "session", "sessions"))
		}
		blocking += ")"
	}
	oldUsers := 0
	if v, ok := o.eng.LookupVersion(from); ok && from != "" {
		oldUsers = o.eng.BlockersUsing(svc, v)
	}
	switch opts.strat.Kind() {
	case strategy.WF:
		out = append(out, fmt.Sprintf("WF: switches to %s only once %s is free; %s; aborts at timeout %v",
			to, s, blocking, opts.timeout))
	case strategy.BF:
		out = append(out, fmt.Sprintf("BF: switches to %s once %s is free; %s; aborts at timeout %v", to, s, blocking, opts.timeout),
			fmt.Sprintf("BF: meanwhile calls of transactions that have not used %s are held; aborts when one is held max-block %v", s, opts.maxBlock))
	case strategy.CV:
		out = append(out, fmt.Sprintf("CV: switches to %s once PREPARING is over, free or not", to),
			fmt.Sprintf("CV: transactions that used %s@%s keep it; DRAINING lasts until none may call it (%s now)", s, from,
				count(oldUsers, "transaction", "transactions")))
	case strategy.NAIVE:
		at := "no transaction blocks " + s + " now, but any that does at the switch may run on both versions"
		switch {
		case plan.Blocking == 1:
			at = "the 1 transaction that blocks " + s + " now may run on both versions"
		case plan.Blocking > 1:
			at = fmt.Sprintf("the %d transactions that block %s now may run on both versions", plan.Blocking, s)
		}
		out = append(out, fmt.Sprintf("NAIVE: switches to %s at once with no pinning: %s", to, at))
	}
	return out
}

// count is "1 thing" or "n things".
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
