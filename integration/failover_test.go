package integration

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/loadsim"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The failover graph: a calls b and c, both call d, the service updated.
var failoverGraph = loadsim.Graph{"a": {"b", "c"}, "b": {"d"}, "c": {"d"}}

var failoverInstances = []string{"a@v1", "b@v1", "c@v1", "d@v1", "d@v2"}

func startFailoverWorld(t *testing.T, flush time.Duration) (*servertest.Cluster, *loadsim.Sim) {
	t.Helper()
	return startFailoverWorldWith(t, flush, failoverInstances)
}

// startFailoverWorldWith is startFailoverWorld with these instances.
func startFailoverWorldWith(t *testing.T, flush time.Duration, instances []string) (*servertest.Cluster, *loadsim.Sim) {
	t.Helper()
	return startFailoverWorldConfig(t, flush, instances, nil)
}

// startFailoverWorldConfig is startFailoverWorldWith; configure, if set,
// adjusts the load's configuration.
func startFailoverWorldConfig(t *testing.T, flush time.Duration, instances []string, configure func(*loadsim.Config)) (*servertest.Cluster, *loadsim.Sim) {
	t.Helper()
	cl := servertest.StartCluster(t, 3, func(c *server.Config) {
		c.Coordinator.FlushInterval = flush
		c.Coordinator.MinSessionTTL = coordinator.DefaultMinSessionTTL
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := loadsim.Config{Coordinators: cl.Addrs(), Graph: failoverGraph,
		Instances: instances, Entry: "a", HeartbeatInterval: 500 * time.Millisecond, AllowedMisses: 2}
	if configure != nil {
		configure(&cfg)
	}
	sim, err := loadsim.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	return cl, sim
}

func getUpdate(t *testing.T, admin pb.AdminServiceClient, id string) *pb.Update {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	u, err := admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: id})
	if err != nil {
		return nil // no leader for a moment: the caller polls
	}
	return u
}

// failoverCases are the phases a leader is killed in, per strategy, by
// TestFailoverInEveryPhase and TestSetFailoverInEveryPhase. flush is the
// write-behind period: with an hour no transaction record reaches etcd,
// and the new leader knows the transactions that were running only from
// their entries' resync and the pins.
var failoverCases = []struct {
	strategy pb.Strategy
	phase    pb.Phase
	flush    time.Duration
}{
	{pb.Strategy_STRATEGY_WF, pb.Phase_PHASE_PREPARING, flushWritten},
	{pb.Strategy_STRATEGY_WF, pb.Phase_PHASE_WAITING, flushWritten},
	{pb.Strategy_STRATEGY_BF, pb.Phase_PHASE_PREPARING, flushWritten},
	{pb.Strategy_STRATEGY_BF, pb.Phase_PHASE_WAITING, flushWritten},
	{pb.Strategy_STRATEGY_CV, pb.Phase_PHASE_PREPARING, flushWritten},
	{pb.Strategy_STRATEGY_CV, pb.Phase_PHASE_DRAINING, flushWritten},
	{pb.Strategy_STRATEGY_WF, pb.Phase_PHASE_WAITING, flushUnwritten},
	{pb.Strategy_STRATEGY_BF, pb.Phase_PHASE_WAITING, flushUnwritten},
	{pb.Strategy_STRATEGY_CV, pb.Phase_PHASE_DRAINING, flushUnwritten},
}

// The write-behind periods of failoverCases.
const flushWritten, flushUnwritten = 2 * time.Millisecond, time.Hour

// Killing the leader in any phase of a WF, BF or CV update under load
// loses neither consistency nor the update: the new leader restores the
// graph (unseen transactions legacy), holds switches until every session
// re-registered or expired, and resumes the update from its phase.
func TestFailoverInEveryPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("three replicas, kills and lease expiries")
	}
	for _, tc := range failoverCases {
		t.Run(fmt.Sprintf("%s/%s/flush=%v", tc.strategy, tc.phase, tc.flush), func(t *testing.T) {
			failoverInPhase(t, tc.strategy, tc.phase, tc.flush, moveOne)
		})
	}
}

// The set of TestSetFailoverInEveryPhase: c and d, updated together.
var (
	failoverSet          = loadsim.Set{"c": {"v1", "v2"}, "d": {"v1", "v2"}}
	failoverSetInstances = append(slices.Clone(failoverInstances), "c@v2")
)

// failoverMode is what failoverInPhase updates: d, the set of c and d, or
// the set of c and d by promoting the lane gray (c=v2, d=v2) while a share
// of the load runs in it.
type failoverMode int

const (
	moveOne failoverMode = iota
	moveSet
	moveByLane
)

// failoverInPhase kills the leader while an update of d (moveSet, of c
// and d together: DESIGN.md §4.8; moveByLane, of c and d by a lane's
// promotion: §4.9) with strategy k is in phase, under load, and checks
// that the update finishes DONE with no version-inconsistent transaction,
// no mixed set and (moveByLane) no transaction that left its lane, and
// that the promoted lane is then deleted.
func failoverInPhase(t *testing.T, k pb.Strategy, phase pb.Phase, flush time.Duration, mode failoverMode) {
	instances := failoverInstances
	set := mode != moveOne
	if set {
		instances = failoverSetInstances
	}
	var configure func(*loadsim.Config)
	if mode == moveByLane {
		configure = func(c *loadsim.Config) { c.LaneTag = laneTag(0.3) }
	}
	cl, sim := startFailoverWorldConfig(t, flush, instances, configure)
	if set {
		sim.WatchSet(failoverSet)
	}
	ctx := context.Background()
	stop := sim.Load(ctx, 100, 20)
	defer stop()

	leader := cl.Leader(10 * time.Second)
	// Admin calls go through a follower, which forwards them to
	// whoever leads.
	admin := cl.Follower(leader).Admin

	var release func()
	switch phase {
	case pb.Phase_PHASE_PREPARING:
		// A session that never acknowledges update mode holds the
		// update in PREPARING; it dies with the leader, and the
		// new leader waits for its lease to expire.
		sc, _, err := simsidecar.Connect(ctx, leader.Conn, &pb.Register{InstanceId: "straggler", Service: "e",
			Version: "v1", Address: "127.0.0.1:1", HeartbeatInterval: durationpb.New(500 * time.Millisecond), AllowedMisses: 1})
		if err != nil {
			t.Fatal(err)
		}
		sc.SetAutoAck(false)
		t.Cleanup(sc.Close)
	default:
		// A transaction that used d@v1 and may call d again keeps d
		// from being free (WF, BF) and v1 from draining (CV).
		c := sim.Client("c@v1")
		tctx, _ := c.Begin(ctx)
		call, err := c.Route(tctx, "d")
		if err != nil {
			t.Fatal(err)
		}
		if call.Version != "v1" {
			t.Fatalf("blocker routed to d@%s before the update", call.Version)
		}
		call.Finish()
		release = func() {
			// After the failover it calls d again: it must get v1.
			again, err := c.Route(tctx, "d")
			if err != nil {
				t.Errorf("blocker's second call: %v", err)
			} else {
				if again.Version != "v1" {
					t.Errorf("blocker used d@v1, then was routed to d@%s", again.Version)
				}
				again.Finish()
			}
			if err := c.End(tctx); err != nil {
				t.Errorf("blocker end: %v", err)
			}
		}
	}

	req := &pb.StartUpdateRequest{Service: "d", ToVersion: "v2", Strategy: k,
		Timeout: durationpb.New(2 * time.Minute), MaxBlock: durationpb.New(time.Minute)}
	if set {
		req.Service, req.ToVersion = "", ""
		req.Members = []*pb.ServiceVersion{{Service: "c", Version: "v2"}, {Service: "d", Version: "v2"}}
	}
	var u *pb.Update
	var err error
	if mode == moveByLane {
		u, err = promoteFailoverLane(ctx, admin, k)
	} else {
		u, err = admin.StartUpdate(ctx, req)
	}
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 20*time.Second, "the update to reach "+phase.String(), func() bool {
		g := getUpdate(t, admin, u.Id)
		return g != nil && g.Phase == phase
	})
	time.Sleep(100 * time.Millisecond) // load runs in the phase

	killed := time.Now()
	cl.Crash(leader)
	next := cl.Leader(20 * time.Second)
	t.Logf("new leader after %v", time.Since(killed).Round(time.Millisecond))
	admin = next.Admin
	if release != nil {
		// Not before every session re-registered: the blocker's
		// own sidecar must be back for its second call.
		awaitConnected(t, admin, len(instances))
		release()
	}
	awaitDoneConsistent(t, time.Minute, func() *pb.Update { return getUpdate(t, admin, u.Id) }, stop, sim)
	if mode == moveByLane {
		checkLaneLoad(t, sim)
		servertest.Eventually(t, 20*time.Second, "the promoted lane to be deleted", func() bool {
			l, err := admin.ListLanes(ctx, &pb.ListLanesRequest{})
			return err == nil && len(l.Lanes) == 0
		})
	}
	t.Logf("%d requests, update done %v after the kill", sim.Requests(), time.Since(killed).Round(time.Millisecond))
}

// TestSetFailoverInEveryPhase is TestFailoverInEveryPhase for a set update
// of c and d: the blocker (root at c@v1, used d@v1) keeps the set from
// being free and its old side from draining, and after the failover its
// second call to d goes to v1; the load's transactions (a calls b and c,
// both call d) run neither version of a service twice nor a mixed set.
func TestSetFailoverInEveryPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("three replicas, kills and lease expiries")
	}
	for _, tc := range failoverCases {
		t.Run(fmt.Sprintf("%s/%s/flush=%v", tc.strategy, tc.phase, tc.flush), func(t *testing.T) {
			failoverInPhase(t, tc.strategy, tc.phase, tc.flush, moveSet)
		})
	}
}

// TestLaneFailoverInEveryPhase is TestSetFailoverInEveryPhase for the set
// of c and d moved by promoting the lane gray (c=v2, d=v2) while 30 % of
// the load runs in it: the new leader restores the lane and its promotion,
// resumes the update, deletes the lane once it is DONE, and the lane's
// transactions stay on v2 of c and d throughout.
func TestLaneFailoverInEveryPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("three replicas, kills and lease expiries")
	}
	for _, tc := range failoverCases {
		t.Run(fmt.Sprintf("%s/%s/flush=%v", tc.strategy, tc.phase, tc.flush), func(t *testing.T) {
			failoverInPhase(t, tc.strategy, tc.phase, tc.flush, moveByLane)
		})
	}
}

// promoteFailoverLane creates the lane gray (c=v2, d=v2), waits until the
// load runs transactions in it, and promotes it with strategy k.
func promoteFailoverLane(ctx context.Context, admin pb.AdminServiceClient, k pb.Strategy) (*pb.Update, error) {
	lane := &pb.Lane{Name: "gray", Members: []*pb.ServiceVersion{{Service: "c", Version: "v2"}, {Service: "d", Version: "v2"}}}
	if _, err := admin.CreateLane(ctx, &pb.CreateLaneRequest{Lane: lane}); err != nil {
		return nil, err
	}
	time.Sleep(200 * time.Millisecond) // lane transactions run before the promotion
	return admin.PromoteLane(ctx, &pb.PromoteLaneRequest{Name: "gray", Strategy: k,
		Timeout: durationpb.New(2 * time.Minute), MaxBlock: durationpb.New(time.Minute)})
}

// awaitDoneConsistent waits up to within for the update getUpdate reads to
// finish, lets the load run 200 ms past it, stops it, and fails the test
// unless the update is DONE and the load saw no version-inconsistent
// transaction and no failed request.
func awaitDoneConsistent(t *testing.T, within time.Duration, getUpdate func() *pb.Update, stop func(), sim *loadsim.Sim) {
	t.Helper()
	awaitEndConsistent(t, within, pb.Phase_PHASE_DONE, getUpdate, stop, sim)
}

// awaitEndConsistent is awaitDoneConsistent for an update that must end in
// phase want; it returns the update as it ended.
func awaitEndConsistent(t *testing.T, within time.Duration, want pb.Phase, getUpdate func() *pb.Update, stop func(), sim *loadsim.Sim) *pb.Update {
	t.Helper()
	var final *pb.Update
	servertest.Eventually(t, within, "the update to finish", func() bool {
		final = getUpdate()
		return final != nil && final.FinishedAt != nil && final.Progress == nil
	})
	time.Sleep(200 * time.Millisecond) // load after the switch
	stop()
	if final.Phase != want {
		t.Fatalf("update ended %s (%s), want %s", final.Phase, final.Reason, want)
	}
	if v := sim.Violations(); v != 0 {
		t.Errorf("%d version-inconsistent transactions; first: %s", v, sim.FirstViolation())
	}
	if m := sim.MixedSets(); m != 0 {
		t.Errorf("%d transactions ran a mixed set; first: %s", m, sim.FirstViolation())
	}
	if f := sim.Failed(); f != 0 {
		t.Errorf("%d of %d requests failed; first: %v", f, sim.Requests(), sim.FirstError())
	}
	return final
}
