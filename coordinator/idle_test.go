package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// progressAsleep waits until c's progress check stops running: it ran
// no more over ten of its periods.
func progressAsleep(t *testing.T, c *coordinator.Coordinator, what string) {
	t.Helper()
	servertest.Eventually(t, 10*time.Second, what, func() bool {
		n := c.ProgressRuns()
		time.Sleep(100 * time.Millisecond) // ten periods of 10 ms
		return c.ProgressRuns() == n
	})
}

// With no update the progress check sleeps instead of running every
// 10 ms; an update wakes it and runs through every phase as before, and
// once it is DONE the check sleeps again.
func TestProgressCheckSleepsWithoutUpdate(t *testing.T) {
	ts := startMem(t)
	ts.Sidecar("a-1", "a", "v1", "b")
	ts.Sidecar("b-1", "b", "v1")
	ts.Sidecar("b-2", "b", "v2")
	c := ts.Leader()
	progressAsleep(t, c, "progress check asleep before the update")

	ctx := context.Background()
	for i, strat := range []pb.Strategy{pb.Strategy_STRATEGY_CV, pb.Strategy_STRATEGY_NAIVE} {
		to := []string{"v2", "v1"}[i]
		before := c.ProgressRuns()
		u, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "b", ToVersion: to, Strategy: strat})
		if err != nil {
			t.Fatal(err)
		}
		servertest.Eventually(t, 20*time.Second, "update "+u.Id+" DONE", func() bool {
			g, err := ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
			if err != nil {
				t.Fatal(err)
			}
			if g.Phase == pb.Phase_PHASE_ABORTED {
				t.Fatalf("update aborted: %v", g)
			}
			return g.Phase == pb.Phase_PHASE_DONE
		})
		// The update signalled the check awake when it began; an update
		// driven to DONE by events alone (NAIVE switches at once) can
		// finish before the check's goroutine is scheduled, so the run
		// may come after DONE, but it must come.
		servertest.Eventually(t, 10*time.Second, strat.String()+" update woke the progress check", func() bool {
			return c.ProgressRuns() != before
		})
		progressAsleep(t, c, "progress check asleep after the update")
	}
}
