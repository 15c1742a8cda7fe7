package main

import (
	"context"
	"fmt"
	"log"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// canaryBench runs the update of svc-d as a canary (-strategies canary):
// manual steps, each promoted after -canary-step, and counts, per step,
// the transactions new to svc-d by the version svc-d's simulated instances
// recorded serving them (loadsim's OnServe), not by the coordinator's
// assignments. A transaction counts in the step in force when svc-d first
// served it.
type canaryBench struct {
	steps   []uint32
	stepLen time.Duration

	mu     sync.Mutex
	cur    int             // the step in force; -1 before the canary
	seen   map[string]bool // transactions svc-d served already
	counts [][2]int        // per step: old, new
	done   chan struct{}   // closed when the last step has run its length
}

func newCanaryBench(steps string, stepLen time.Duration) *canaryBench {
	c := &canaryBench{stepLen: stepLen, cur: -1, seen: map[string]bool{}, done: make(chan struct{})}
	for _, s := range strings.Split(steps, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
		if err != nil {
			log.Fatalf("-canary-steps %q: %v", steps, err)
		}
		c.steps = append(c.steps, uint32(n))
	}
	c.counts = make([][2]int, len(c.steps))
	return c
}

// onServe is loadsim's OnServe hook.
func (c *canaryBench) onServe(txn, svc, version string) {
	if svc != target {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[txn] {
		return
	}
	c.seen[txn] = true
	if c.cur < 0 {
		return
	}
	if version == "v2" {
		c.counts[c.cur][1]++
	} else {
		c.counts[c.cur][0]++
	}
}

// request makes req a manual canary with the bench's steps, with no
// timeout: -wf-timeout is WF's, and a canary's would cut its steps short.
func (c *canaryBench) request(req *pb.StartUpdateRequest) {
	req.CanarySteps, req.Timeout = c.steps, nil
}

// drive waits for the canary to begin, then promotes it every stepLen,
// the last step (the switch) included, and lets that one run stepLen too.
func (c *canaryBench) drive(ctx context.Context, admin pb.AdminServiceClient, id string) {
	defer close(c.done)
	for {
		g, err := admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: id})
		check(err)
		if g.Phase == pb.Phase_PHASE_CANARY || g.FinishedAt != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	c.setStep(0)
	for i := 1; i < len(c.steps); i++ {
		time.Sleep(c.stepLen)
		_, err := admin.PromoteUpdate(ctx, &pb.PromoteUpdateRequest{Id: id})
		check(err)
		c.setStep(i)
	}
	time.Sleep(c.stepLen)
	c.setStep(-1)
}

func (c *canaryBench) setStep(i int) {
	c.mu.Lock()
	c.cur = i
	c.mu.Unlock()
}

// lines are the per-step lines: asked and served weights.
func (c *canaryBench) lines() string {
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for i, n := range c.counts {
		served := 0.0
		if n[0]+n[1] > 0 {
			served = 100 * float64(n[1]) / float64(n[0]+n[1])
		}
		fmt.Fprintf(&b, "canary step=%d asked_pct=%d served_pct=%.1f txns=%d\n", i+1, c.steps[i], served, n[0]+n[1])
	}
	return b.String()
}
