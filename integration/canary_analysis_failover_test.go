package integration

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// TestCanaryAnalysisSurvivesFailover: a bad d@v2 fails every call in its
// canary step, but fewer than the analysis needs for a verdict (20) before
// the leader is killed; after the failover it answers every call well.
// Only with the window the last leader stored are there enough calls, and
// errors enough, to abort it: the new leader shows the stored window in
// the update's progress, aborts the canary within its window with the
// error rates in the reason (the errors counted are the ones before the
// kill), and deletes the stored window once out of the canary steps.
func TestCanaryAnalysisSurvivesFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("three replicas, a kill and lease expiries")
	}
	const badCalls = 15 // below strategy.MinAnalysisCalls
	cl, sim := startFailoverWorld(t, flushWritten)
	cli := etcdClient(t, cl.Etcd.Endpoints()...)
	ctx := context.Background()
	leader := cl.Leader(10 * time.Second)
	admin := cl.Follower(leader).Admin
	u, err := admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "d", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV,
		CanarySteps: []uint32{50, 100}, MaxErrorRate: 0.05, AnalysisWindow: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 20*time.Second, "CANARY", func() bool {
		g := getUpdate(t, admin, u.Id)
		return g != nil && g.Phase == pb.Phase_PHASE_CANARY
	})
	c := sim.Client("c@v1")
	// once runs one transaction at c that calls d once; d@v2 answers 500
	// if v2Fails, d@v1 always 200. It returns the version that served.
	once := func(v2Fails bool) string {
		t.Helper()
		tctx, _ := c.Begin(ctx)
		call, err := c.Route(tctx, "d")
		if err != nil {
			t.Fatal(err)
		}
		status := 200
		if call.Version == "v2" && v2Fails {
			status = 500
		}
		call.FinishWith(call.HTTPOutcome(status, nil))
		if err := c.End(tctx); err != nil {
			t.Fatal(err)
		}
		return call.Version
	}
	for n := 0; n < badCalls; {
		if once(true) == "v2" {
			n++
		}
	}
	analysis := func(admin pb.AdminServiceClient) *pb.VersionCalls {
		return getUpdate(t, admin, u.Id).GetProgress().GetCanaryAnalysis().GetNewVersion()
	}
	servertest.Eventually(t, 10*time.Second, "the leader to count the failed calls", func() bool {
		a := analysis(admin)
		return a.GetCalls() == badCalls && a.GetErrors() == badCalls
	})
	key := storage.Keys{}.Analysis(u.Id)
	servertest.Eventually(t, 10*time.Second, "the window to be stored", func() bool {
		resp, err := cli.Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 {
			return false
		}
		var rec pb.AnalysisRecord
		if proto.Unmarshal(resp.Kvs[0].Value, &rec) != nil {
			return false
		}
		var calls, errs uint64
		for _, s := range rec.NewVersion.GetSlots() {
			calls, errs = calls+s.Calls, errs+s.Errors
		}
		return calls == badCalls && errs == badCalls
	})
	if g := getUpdate(t, admin, u.Id); g.Phase != pb.Phase_PHASE_CANARY {
		t.Fatalf("before the failover: %s (%q), want CANARY: %d calls say nothing yet", g.Phase, g.Reason, badCalls)
	}

	cl.Crash(leader)
	admin = cl.Leader(20 * time.Second).Admin
	awaitConnected(t, admin, len(failoverInstances))
	if a := analysis(admin); a.GetCalls() != badCalls || a.GetErrors() != badCalls {
		t.Fatalf("after the failover the window of d@v2 holds %d calls, %d failed; want the %d failed before it", a.GetCalls(), a.GetErrors(), badCalls)
	}
	var g *pb.Update
	for n := 0; ; {
		if once(false) == "v2" {
			n++
		}
		if g = getUpdate(t, admin, u.Id); g != nil && g.Phase != pb.Phase_PHASE_CANARY {
			break
		}
		if n > 100 {
			t.Fatalf("%d good calls of d@v2 after the failover and still %s: the analysis lost the window", n, g.GetPhase())
		}
	}
	if g.Phase != pb.Phase_PHASE_ABORTED || !strings.Contains(g.Reason, "analysis: error rate of the new version") ||
		!strings.Contains(g.Reason, "over the last 1m0s") {
		t.Fatalf("after the failover: %s %q, want ABORTED by the analysis", g.Phase, g.Reason)
	}
	m := regexp.MustCompile(`\((\d+) of (\d+) calls\)`).FindStringSubmatch(g.Reason)
	if m == nil {
		t.Fatalf("reason %q names no counts", g.Reason)
	}
	errs, _ := strconv.Atoi(m[1])
	calls, _ := strconv.Atoi(m[2])
	if errs != badCalls || calls < 20 {
		t.Fatalf("reason %q: %d of %d calls, want the %d failed before the failover of at least 20", g.Reason, errs, calls, badCalls)
	}
	t.Logf("aborted: %s", g.Reason)
	servertest.Eventually(t, 10*time.Second, "the stored window to be deleted", func() bool {
		resp, err := cli.Get(ctx, key)
		return err == nil && len(resp.Kvs) == 0
	})
	if v := sim.Violations(); v != 0 {
		t.Errorf("%d version-inconsistent transactions; first: %s", v, sim.FirstViolation())
	}
}
