package integration

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/sidecar"
)

// canaryFailoverSteps are the weights of the canaries of
// TestCanaryFailoverInEveryPhase: three canary steps (first, middle, last)
// before the switch.
var canaryFailoverSteps = []uint32{10, 50, 90, 100}

// canaryFailoverCases are where TestCanaryFailoverInEveryPhase kills the
// leader: in PREPARING, in each canary step, paused, rolling back after an
// abort in a step, and DONE.
var canaryFailoverCases = []struct {
	name   string
	phase  pb.Phase
	step   int  // the canary step (an index into canaryFailoverSteps)
	paused bool // paused before the kill
	abort  bool // aborted (a rollback) before the kill
	set    bool // a canary of the set {c, d} (DESIGN.md §4.8)
}{
	{name: "PREPARING", phase: pb.Phase_PHASE_PREPARING},
	{name: "CANARY/first", phase: pb.Phase_PHASE_CANARY, step: 0},
	{name: "CANARY/middle", phase: pb.Phase_PHASE_CANARY, step: 1},
	{name: "CANARY/last", phase: pb.Phase_PHASE_CANARY, step: 2},
	{name: "CANARY/paused", phase: pb.Phase_PHASE_CANARY, step: 1, paused: true},
	{name: "ABORTED/rolling-back", phase: pb.Phase_PHASE_ABORTED, step: 1, abort: true},
	{name: "DONE", phase: pb.Phase_PHASE_DONE},
	{name: "set/CANARY/middle", phase: pb.Phase_PHASE_CANARY, step: 1, set: true},
	{name: "set/ABORTED/rolling-back", phase: pb.Phase_PHASE_ABORTED, step: 1, abort: true, set: true},
}

// Killing the leader in any phase of a canary of d (manual steps), under
// random load, loses neither consistency nor the canary: the new leader
// resumes the same phase, step, weight and paused flag; transactions that
// used d before the kill (before the canary, or assigned either version
// in a step) are routed to the version they used; the step's served
// weights go on counting from what was stored, exact at every step; a
// rollback goes on sending new transactions to the old version until those
// assigned the new one end. The load runs through it all and the oracle
// sees no transaction on two versions of d. A canary of the set {c, d}
// does the same in a step and rolling back, and no transaction runs a
// mixed set.
func TestCanaryFailoverInEveryPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("three replicas, kills and lease expiries")
	}
	for _, tc := range canaryFailoverCases {
		t.Run(tc.name, func(t *testing.T) {
			canaryFailoverIn(t, tc.phase, tc.step, tc.paused, tc.abort, tc.set)
		})
	}
}

// blocker is a transaction that used d and may call it again: its root at
// b@v1 (c is a member of the set of the set cases), its first call to d
// at version.
type blocker struct {
	ctx     context.Context
	version string
}

// useD begins a transaction at c's service that calls d once and stays
// open.
func useD(t *testing.T, c *sidecar.Client) blocker {
	t.Helper()
	tctx, _ := c.Begin(context.Background())
	call, err := c.Route(tctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	call.Finish()
	return blocker{tctx, call.Version}
}

func canaryFailoverIn(t *testing.T, phase pb.Phase, step int, paused, abort, set bool) {
	instances := failoverInstances
	if set {
		instances = failoverSetInstances
	}
	cl, sim := startFailoverWorldWith(t, flushWritten, instances)
	if set {
		sim.WatchSet(failoverSet)
	}
	ctx := context.Background()
	c := sim.Client("b@v1")
	leader := cl.Leader(10 * time.Second)
	admin := cl.Follower(leader).Admin // forwards to whoever leads

	var blockers []blocker
	if phase != pb.Phase_PHASE_DONE {
		// Used d@v1 before the update: after the failover it is legacy,
		// with no pin, and must stay on v1 whatever the weight.
		blockers = append(blockers, useD(t, c))
	}
	if phase == pb.Phase_PHASE_PREPARING {
		// A session that never acknowledges update mode holds PREPARING;
		// it dies with the leader, and the new one waits for its lease.
		sc, _, err := simsidecar.Connect(ctx, leader.Conn, &pb.Register{InstanceId: "straggler", Service: "e",
			Version: "v1", Address: "127.0.0.1:1", HeartbeatInterval: durationpb.New(500 * time.Millisecond), AllowedMisses: 1})
		if err != nil {
			t.Fatal(err)
		}
		sc.SetAutoAck(false)
		t.Cleanup(sc.Close)
	}
	stop := sim.Load(ctx, 100, 20)
	t.Cleanup(func() { stop() })

	req := &pb.StartUpdateRequest{Service: "d", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV,
		CanarySteps: canaryFailoverSteps, Timeout: durationpb.New(2 * time.Minute)}
	if set {
		req.Service, req.ToVersion = "", ""
		req.Members = []*pb.ServiceVersion{{Service: "c", Version: "v2"}, {Service: "d", Version: "v2"}}
	}
	u, err := admin.StartUpdate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	await := func(what string, ok func(*pb.Update) bool) *pb.Update {
		t.Helper()
		var g *pb.Update
		servertest.Eventually(t, 20*time.Second, what, func() bool {
			g = getUpdate(t, admin, u.Id)
			return g != nil && ok(g)
		})
		return g
	}
	promote := func() *pb.Update {
		t.Helper()
		p, err := admin.PromoteUpdate(ctx, &pb.PromoteUpdateRequest{Id: u.Id})
		if err != nil {
			t.Fatalf("promote: %v", err)
		}
		return p
	}
	if phase == pb.Phase_PHASE_PREPARING {
		await("PREPARING", func(g *pb.Update) bool { return g.Phase == pb.Phase_PHASE_PREPARING })
	} else {
		await("CANARY", func(g *pb.Update) bool { return g.Phase == pb.Phase_PHASE_CANARY })
	}
	if phase == pb.Phase_PHASE_DONE {
		for range len(canaryFailoverSteps) - 1 {
			promote()
		}
		await("DONE", func(g *pb.Update) bool { return g.Phase == pb.Phase_PHASE_DONE })
	}
	if phase == pb.Phase_PHASE_CANARY || abort {
		for range step {
			promote()
		}
		// Ten transactions new to d one after the other, the load
		// stopped: at any weight from 10 to 90% the step's exact counter
		// assigns at least one to each version.
		stop()
		for range 10 {
			blockers = append(blockers, useD(t, c))
		}
		stop = sim.Load(ctx, 100, 20)
		onNew := 0
		for _, b := range blockers[1:] {
			if b.version == "v2" {
				onNew++
			}
		}
		if onNew == 0 || onNew == 10 {
			t.Fatalf("step %d (%d%%): %d of 10 transactions assigned d@v2", step+1, canaryFailoverSteps[step], onNew)
		}
		if paused {
			if _, err := admin.PauseUpdate(ctx, &pb.PauseUpdateRequest{Id: u.Id}); err != nil {
				t.Fatal(err)
			}
		}
		if abort {
			a, err := admin.AbortUpdate(ctx, &pb.AbortUpdateRequest{Id: u.Id, Reason: "test"})
			if err != nil {
				t.Fatal(err)
			}
			if a.Phase != pb.Phase_PHASE_ABORTED || !a.RollingBack {
				t.Fatalf("abort in a canary step: %s rolling_back=%v, want a rollback", a.Phase, a.RollingBack)
			}
		}
	}
	time.Sleep(100 * time.Millisecond) // load runs in the phase
	before := getUpdate(t, admin, u.Id)

	killed := time.Now()
	cl.Crash(leader)
	next := cl.Leader(20 * time.Second)
	t.Logf("new leader after %v", time.Since(killed).Round(time.Millisecond))
	admin = next.Admin
	awaitConnected(t, admin, len(instances))

	g := getUpdate(t, admin, u.Id)
	if g == nil || g.Phase != before.Phase || g.RollingBack != before.RollingBack ||
		g.GetCanary().GetStep() != before.Canary.Step || g.GetCanary().GetPaused() != before.Canary.Paused ||
		len(g.GetCanary().GetStepsServed()) != len(before.Canary.StepsServed) {
		t.Fatalf("after the failover: %s rolling_back=%v step %d paused=%v (%d steps served); before: %s rolling_back=%v step %d paused=%v (%d)",
			g.GetPhase(), g.GetRollingBack(), g.GetCanary().GetStep()+1, g.GetCanary().GetPaused(), len(g.GetCanary().GetStepsServed()),
			before.Phase, before.RollingBack, before.Canary.Step+1, before.Canary.Paused, len(before.Canary.StepsServed))
	}
	for i, b := range blockers {
		again, err := c.Route(b.ctx, "d")
		if err != nil {
			t.Fatalf("blocker %d's second call: %v", i, err)
		}
		if again.Version != b.version {
			t.Fatalf("blocker %d used d@%s, then after the failover was routed to d@%s", i, b.version, again.Version)
		}
		again.Finish()
	}
	switch {
	case phase == pb.Phase_PHASE_CANARY:
		// The weight is in force (paused too): the step goes on
		// assigning both versions, from the counts stored.
		cur := len(before.Canary.StepsServed) - 1
		was := before.Canary.StepsServed[cur]
		await("the new leader to assign both versions in the step", func(g *pb.Update) bool {
			s := g.Canary.StepsServed[cur]
			return s.NewTransactions > was.NewTransactions && s.OldTransactions > was.OldTransactions
		})
		if paused {
			if _, err := admin.ResumeUpdate(ctx, &pb.ResumeUpdateRequest{Id: u.Id}); err != nil {
				t.Fatal(err)
			}
		}
	case abort:
		// New transactions go to the old version.
		b := useD(t, c)
		if b.version != "v1" {
			t.Fatalf("rolling back after the failover, a new transaction was routed to d@%s", b.version)
		}
		if err := c.End(b.ctx); err != nil {
			t.Fatal(err)
		}
	case phase == pb.Phase_PHASE_DONE:
		b := useD(t, c)
		if b.version != "v2" {
			t.Fatalf("after DONE and a failover, a new transaction was routed to d@%s", b.version)
		}
		if err := c.End(b.ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := pb.Phase_PHASE_DONE
	if abort {
		want = pb.Phase_PHASE_ABORTED
	} else if phase != pb.Phase_PHASE_DONE {
		await("CANARY", func(g *pb.Update) bool { return g.Phase == pb.Phase_PHASE_CANARY })
		for p := promote(); p.Phase == pb.Phase_PHASE_CANARY; p = promote() {
		}
	}
	for _, b := range blockers {
		if err := c.End(b.ctx); err != nil {
			t.Fatal(err)
		}
	}
	final := awaitEndConsistent(t, time.Minute, want, func() *pb.Update { return getUpdate(t, admin, u.Id) }, stop, sim)
	checkServedWeights(t, final)
	t.Logf("%d requests; history %v; steps %v", sim.Requests(), phases(final), final.Canary.StepsServed)
}

// checkServedWeights fails the test unless every canary step of u before
// the last (100) assigned exactly floor(n*w/100) of its n transactions to
// the new version.
func checkServedWeights(t *testing.T, u *pb.Update) {
	t.Helper()
	for i, st := range u.Canary.StepsServed {
		if st.Percent == 100 {
			continue
		}
		n := st.OldTransactions + st.NewTransactions
		if want := n * uint64(st.Percent) / 100; st.NewTransactions != want {
			t.Errorf("step %d (%d%%): %d of %d transactions assigned the new version, want %d", i+1, st.Percent, st.NewTransactions, n, want)
		}
	}
}

// awaitConnected waits until n sessions are connected to the leader admin
// reaches (after a failover: every sidecar has re-registered).
func awaitConnected(t *testing.T, admin pb.AdminServiceClient, n int) {
	t.Helper()
	servertest.Eventually(t, 20*time.Second, "sessions to resync", func() bool {
		l, err := admin.ListSessions(context.Background(), &pb.ListSessionsRequest{})
		if err != nil {
			return false
		}
		connected := 0
		for _, s := range l.Sessions {
			if s.Connected {
				connected++
			}
		}
		return connected == n
	})
}
