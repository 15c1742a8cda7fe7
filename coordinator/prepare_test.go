package coordinator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// A session that never acknowledges update mode keeps an update PREPARING
// only until its prepare timeout: meanwhile the progress names it and says
// what the update waits for; then the update aborts with a reason naming
// it, and calls go to the old version as before (issue 13, "never stuck").
func TestPrepareTimeoutNamesTheSessionsThatDidNotAcknowledge(t *testing.T) {
	for _, tc := range []struct {
		name     string
		server   time.Duration // --prepare-timeout
		request  time.Duration // the update's prepare_timeout; 0: the server's
		strategy pb.Strategy
	}{
		{"server default, cv", 1500 * time.Millisecond, 0, pb.Strategy_STRATEGY_CV},
		{"per update, wf", time.Hour, 1500 * time.Millisecond, pb.Strategy_STRATEGY_WF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startMem(t, func(c *coordinator.Config) { c.PrepareTimeout = tc.server })
			ts.Sidecar("a-1", "a", "v1", "b")
			ts.Sidecar("b-1", "b", "v1")
			ts.Sidecar("b-2", "b", "v2")
			lazy := ts.Sidecar("lazy-1", "c", "v1", "b")
			lazy.SetAutoAck(false)
			ctx := context.Background()
			req := &pb.StartUpdateRequest{Service: "b", ToVersion: "v2", Strategy: tc.strategy}
			if tc.request > 0 {
				req.PrepareTimeout = durationpb.New(tc.request)
			}
			u, err := ts.Admin.StartUpdate(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if got := u.PrepareTimeout.AsDuration(); got != 1500*time.Millisecond {
				t.Fatalf("update's prepare_timeout = %v, want 1.5s", got)
			}
			var p *pb.UpdateProgress
			servertest.Eventually(t, 5*time.Second, "progress naming lazy-1 alone", func() bool {
				g, err := ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
				if err != nil || g.Phase != pb.Phase_PHASE_PREPARING {
					t.Fatalf("update: %v %v, want PREPARING", g, err)
				}
				p = g.Progress
				return p.GetUnacknowledgedSessions() == 1
			})
			if len(p.UnacknowledgedSessionIds) != 1 || p.UnacknowledgedSessionIds[0] != "lazy-1" ||
				!strings.Contains(p.WaitingFor, "1 session to acknowledge update mode (lazy-1): aborts at prepare-timeout 1.5s") {
				t.Fatalf("progress while PREPARING: %v", p)
			}
			var g *pb.Update
			servertest.Eventually(t, 10*time.Second, "the update to abort", func() bool {
				g, err = ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
				return err == nil && g.Phase == pb.Phase_PHASE_ABORTED
			})
			want := "prepare-timeout: 1 sessions did not acknowledge update mode within 1.5s: lazy-1"
			if g.Reason != want {
				t.Fatalf("reason %q, want %q", g.Reason, want)
			}
			if took := g.FinishedAt.AsTime().Sub(g.CreatedAt.AsTime()); took < 1500*time.Millisecond || took > 5*time.Second {
				t.Fatalf("aborted %v after it started, want just after 1.5s", took)
			}
			// Nothing switched: the default is still v1.
			if r := lazy.Route("b"); r == nil || r.DefaultVersion != "v1" {
				t.Fatalf("route of b after the abort: %v, want v1", r)
			}
		})
	}
}

// A WF update that sets no timeout gets the server's --update-timeout:
// WAITING for a service that is never free ends, ABORTED with the reason.
func TestWaitingWithoutTimeoutHasTheServerBound(t *testing.T) {
	ts := startMem(t, func(c *coordinator.Config) { c.UpdateTimeout = time.Second })
	a := ts.Sidecar("a-1", "a", "v1", "b")
	ts.Sidecar("b-1", "b", "v1")
	ts.Sidecar("b-2", "b", "v2")
	// T used b and may call it again: b is not free while T lives.
	servertest.Send(t, a, simsidecar.Begin("T", 1), simsidecar.Call("T", 1, "b", 2), simsidecar.Return("T", 2))
	ctx := context.Background()
	u, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "b", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_WF})
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Timeout.AsDuration(); got != time.Second {
		t.Fatalf("update's timeout = %v, want the server's 1s", got)
	}
	var g *pb.Update
	servertest.Eventually(t, 5*time.Second, "WAITING, saying for what", func() bool {
		g, err = ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		return err == nil && g.Phase == pb.Phase_PHASE_WAITING
	})
	if w := g.GetProgress().GetWaitingFor(); !strings.HasPrefix(w, "b to be free (1 transaction blocks it): aborts at timeout 1s") {
		t.Fatalf("waiting_for %q", w)
	}
	servertest.Eventually(t, 10*time.Second, "the update to abort", func() bool {
		g, err = ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		return err == nil && g.Phase == pb.Phase_PHASE_ABORTED
	})
	if want := "timeout: b was not free within 1s"; g.Reason != want {
		t.Fatalf("reason %q, want %q", g.Reason, want)
	}
}
