package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/loadsim"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/sidecar"
)

// laneTag tags share (0 to 1) of the roots "x-lane: gray" (DESIGN.md
// §4.9): loadsim.Config.LaneTag.
func laneTag(share float64) func(*rand.Rand) (string, string, bool) {
	return laneTagOf(share, "x-lane", "gray")
}

// laneTagOf is laneTag with another header and tag.
func laneTagOf(share float64, header, tag string) func(*rand.Rand) (string, string, bool) {
	return func(rng *rand.Rand) (string, string, bool) {
		return header, tag, rng.Float64() < share
	}
}

// laneWorld is a coordinator on embedded etcd and a loadsim over a
// graph, a share of whose roots carry the lane tag; naive makes every
// SDK client resolve lanes by name at each hop (Config.NaiveLanes).
type laneWorld struct {
	t     *testing.T
	ts    *servertest.Server
	admin pb.AdminServiceClient // the leader's (a follower's forwards)
	// With a cluster: crashPromotion is the promotion (counted from 1)
	// during which the leader is crashed (0: none).
	cl             *servertest.Cluster
	crashPromotion int
	promotions     int
	lane           *pb.Lane // the lane as last created, nil when there is none
	instances      int
	sim            *loadsim.Sim
	rng            *rand.Rand
	graph          loadsim.Graph
	versions       map[string][]string // service -> versions with an instance
	defaults       map[string]string   // service -> default version, as the updates made it
	entry          string
}

func startLaneWorld(t *testing.T, rng *rand.Rand, g loadsim.Graph, entry string, instances []string, naive bool) *laneWorld {
	t.Helper()
	ts := servertest.Start(t, "")
	w := startLaneLoad(t, []string{ts.GRPCAddr()}, rng, g, entry, instances, naive)
	w.ts, w.admin = ts, ts.Admin
	return w
}

// startLaneCluster is startLaneWorld on three replicas; the leader is
// crashed during promotion number crashPromotion.
func startLaneCluster(t *testing.T, rng *rand.Rand, g loadsim.Graph, entry string, instances []string, crashPromotion int) *laneWorld {
	t.Helper()
	cl := servertest.StartCluster(t, 3, func(c *server.Config) {
		c.Coordinator.FlushInterval = flushWritten
		c.Coordinator.MinSessionTTL = coordinator.DefaultMinSessionTTL
	})
	w := startLaneLoad(t, cl.Addrs(), rng, g, entry, instances, false)
	w.cl, w.crashPromotion, w.admin = cl, crashPromotion, cl.Leader(10*time.Second).Admin
	return w
}

// startLaneLoad starts the load of a lane world on coordinators.
func startLaneLoad(t *testing.T, coordinators []string, rng *rand.Rand, g loadsim.Graph, entry string, instances []string, naive bool) *laneWorld {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sim, err := loadsim.Start(ctx, loadsim.Config{Coordinators: coordinators, Graph: g, HeartbeatInterval: 500 * time.Millisecond, AllowedMisses: 2,
		Instances: instances, Entry: entry, MaxCalls: 24, LaneTag: laneTag(0.4),
		Configure: func(_ string, cfg *sidecar.Config) { cfg.NaiveLanes = naive }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	w := &laneWorld{t: t, sim: sim, rng: rng, graph: g, entry: entry, instances: len(instances),
		versions: map[string][]string{}, defaults: map[string]string{}}
	for _, inst := range instances {
		svc, ver := splitInstance(inst)
		if !slices.Contains(w.versions[svc], ver) {
			w.versions[svc] = append(w.versions[svc], ver)
		}
		w.defaults[svc] = "v1"
	}
	return w
}

// splitInstance splits "svc@version".
func splitInstance(inst string) (svc, ver string) {
	for i := range inst {
		if inst[i] == '@' {
			return inst[:i], inst[i+1:]
		}
	}
	return inst, ""
}

// randomLaneGraph is a random DAG of n services s0..s(n-1), s0 the entry:
// each later service is called by at least one earlier one. Every service
// but the entry has v1, v2 and (every other one) v3 instances.
func randomLaneGraph(rng *rand.Rand, n int) (loadsim.Graph, []string) {
	g := loadsim.Graph{}
	var instances []string
	for j := range n {
		svc := fmt.Sprintf("s%d", j)
		instances = append(instances, svc+"@v1")
		if j == 0 {
			continue
		}
		instances = append(instances, svc+"@v2")
		if j%2 == 1 {
			instances = append(instances, svc+"@v3")
		}
		callers := 0
		for i := range j {
			if rng.Float64() < 0.35 {
				g[fmt.Sprintf("s%d", i)] = append(g[fmt.Sprintf("s%d", i)], svc)
				callers++
			}
		}
		if callers == 0 {
			from := fmt.Sprintf("s%d", rng.IntN(j))
			g[from] = append(g[from], svc)
		}
	}
	return g, instances
}

// randomLane picks 1 to 3 members among the services but the entry, each
// at a random version it has, the first at another than its default.
func (w *laneWorld) randomLane() *pb.Lane {
	var svcs []string
	for svc := range w.versions {
		if svc != w.entry {
			svcs = append(svcs, svc)
		}
	}
	slices.Sort(svcs)
	w.rng.Shuffle(len(svcs), func(i, j int) { svcs[i], svcs[j] = svcs[j], svcs[i] })
	l := &pb.Lane{Name: "gray"}
	for i, svc := range svcs[:1+w.rng.IntN(min(3, len(svcs)))] {
		var vs []string
		for _, v := range w.versions[svc] {
			if i > 0 || v != w.defaults[svc] {
				vs = append(vs, v) // the first member off its default: a promotion has work
			}
		}
		l.Members = append(l.Members, &pb.ServiceVersion{Service: svc, Version: vs[w.rng.IntN(len(vs))]})
	}
	return l
}

var laneStrategies = []pb.Strategy{pb.Strategy_STRATEGY_CV, pb.Strategy_STRATEGY_WF, pb.Strategy_STRATEGY_BF}

// waitUpdate waits for update id to finish, and records its members' new
// defaults if it is DONE.
func (w *laneWorld) waitUpdate(id string) *pb.Update {
	w.t.Helper()
	var u *pb.Update
	servertest.Eventually(w.t, time.Minute, "update "+id+" to finish", func() bool {
		u = getUpdate(w.t, w.admin, id)
		return u != nil && u.FinishedAt != nil && u.Progress == nil
	})
	if u.Phase == pb.Phase_PHASE_DONE {
		if len(u.Members) == 0 {
			w.defaults[u.Service] = u.ToVersion
		}
		for _, m := range u.Members {
			w.defaults[m.Service] = m.ToVersion
		}
	}
	return u
}

// laneOps are the changes the randomized lane test makes under load.
type laneOp int

const (
	opCreate laneOp = iota
	opEdit
	opDelete
	opPromote
	opUpdate
)

// step makes one change: create the lane, edit it (delete it and create
// it again with other members), delete it, promote it with strategy k
// (one set update, the lane deleted once DONE), or update a random
// service's default to a random version with strategy k. It returns
// whether the lane exists after it, and what it did.
func (w *laneWorld) step(ctx context.Context, op laneOp, k pb.Strategy) (bool, string) {
	t := w.t
	switch op {
	case opCreate, opEdit:
		if op == opEdit {
			if _, err := w.admin.DeleteLane(ctx, &pb.DeleteLaneRequest{Name: "gray"}); err != nil {
				t.Fatalf("delete lane: %v", err)
			}
		}
		w.createLane(ctx)
		return true, fmt.Sprintf("lane %v", w.lane.Members)
	case opDelete:
		if _, err := w.admin.DeleteLane(ctx, &pb.DeleteLaneRequest{Name: "gray"}); err != nil {
			t.Fatalf("delete lane: %v", err)
		}
		return false, "lane deleted"
	case opPromote:
		if !w.laneHasWork() {
			// The updates since moved every member to its lane version:
			// a promotion would be refused. Edit the lane first.
			if _, err := w.admin.DeleteLane(ctx, &pb.DeleteLaneRequest{Name: "gray"}); err != nil {
				t.Fatalf("delete lane: %v", err)
			}
			w.createLane(ctx)
			t.Logf("lane %v (edited before its promotion)", w.lane.Members)
		}
		// A set promoted before is over, its defaults moved on since
		// maybe: what the previous promotion's set allowed is checked
		// no longer (every transaction of its time has ended).
		w.sim.UnwatchSets()
		u, err := w.admin.PromoteLane(ctx, &pb.PromoteLaneRequest{Name: "gray", Strategy: k,
			Timeout: durationpb.New(20 * time.Second), MaxBlock: durationpb.New(2 * time.Second)})
		if err != nil {
			t.Fatalf("promote lane %v: %v", w.lane.Members, err)
		}
		if len(u.Members) > 1 {
			set := loadsim.Set{}
			for _, m := range u.Members {
				set[m.Service] = [2]string{m.FromVersion, m.ToVersion}
			}
			w.sim.WatchSet(set)
		}
		w.promotions++
		if w.promotions == w.crashPromotion {
			w.crashLeader(u.Id)
		}
		u = w.waitUpdate(u.Id)
		if u.Phase != pb.Phase_PHASE_DONE {
			servertest.Eventually(t, 10*time.Second, "an unfinished promotion to be forgotten", func() bool {
				l, err := w.admin.ListLanes(ctx, &pb.ListLanesRequest{})
				return err == nil && len(l.Lanes) == 1 && l.Lanes[0].Promotion == ""
			})
			return true, fmt.Sprintf("promotion %s ended %s (%s); lane kept", k, u.Phase, u.Reason)
		}
		servertest.Eventually(t, 10*time.Second, "the promoted lane to be deleted", func() bool {
			l, err := w.admin.ListLanes(ctx, &pb.ListLanesRequest{})
			return err == nil && len(l.Lanes) == 0
		})
		return false, fmt.Sprintf("promoted by %s (%s): lane deleted", k, pb.Phase_PHASE_DONE)
	default:
		var svcs []string
		for svc, vs := range w.versions {
			if len(vs) > 1 {
				svcs = append(svcs, svc)
			}
		}
		slices.Sort(svcs)
		svc := svcs[w.rng.IntN(len(svcs))]
		var to []string
		for _, v := range w.versions[svc] {
			if v != w.defaults[svc] {
				to = append(to, v)
			}
		}
		w.sim.UnwatchSets() // as for a promotion
		u, err := w.admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: svc, ToVersion: to[w.rng.IntN(len(to))], Strategy: k,
			Timeout: durationpb.New(20 * time.Second), MaxBlock: durationpb.New(2 * time.Second)})
		if err != nil {
			t.Fatalf("update %s: %v", svc, err)
		}
		u = w.waitUpdate(u.Id)
		return w.haveLane(ctx), fmt.Sprintf("update %s %s→%s by %s: %s", svc, u.FromVersion, u.ToVersion, k, u.Phase)
	}
}

// Lanes keep their guarantee while they and the defaults change under
// load: over random graphs, with lane transactions among the load, the
// lane is created, edited (deleted and created with other members),
// deleted and promoted (cv, wf, bf), and services' defaults are updated
// (cv, wf, bf), one change after another. No transaction runs on two
// versions of a service, none leaves the member map it entered with, none
// runs a promoted set mixed outside its lane, and no request fails.
func TestLanesKeepTheirGuarantee(t *testing.T) {
	if testing.Short() {
		t.Skip("load over random graphs, updates under it")
	}
	for i := range 3 {
		t.Run(fmt.Sprintf("graph%d", i), func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			g, instances := randomLaneGraph(rng, 5+rng.IntN(3))
			t.Logf("graph %v", g)
			w := startLaneWorld(t, rng, g, "s0", instances, false)
			ctx := context.Background()
			stop := w.sim.Load(ctx, 80, 30)
			defer stop()
			w.runPlan(ctx)
			stop()
			checkLaneLoad(t, w.sim)
		})
	}
}

// createLane creates the lane gray with random members (randomLane).
func (w *laneWorld) createLane(ctx context.Context) {
	w.t.Helper()
	l := w.randomLane()
	if _, err := w.admin.CreateLane(ctx, &pb.CreateLaneRequest{Lane: l}); err != nil {
		w.t.Fatalf("create lane %v: %v", l, err)
	}
	w.lane = l
}

// laneHasWork says whether a member of the lane is off its lane version
// by default.
func (w *laneWorld) laneHasWork() bool {
	for _, m := range w.lane.GetMembers() {
		if w.defaults[m.Service] != m.Version {
			return true
		}
	}
	return false
}

// crashLeader crashes the leader a random moment (up to 40 ms: the
// promotions are short) into update id, and goes on with the new one once
// every sidecar registered with it (the next change may need them).
func (w *laneWorld) crashLeader(id string) {
	w.t.Helper()
	time.Sleep(time.Duration(w.rng.IntN(40)) * time.Millisecond)
	leader := w.cl.Leader(10 * time.Second)
	phase := "?"
	if u := getUpdate(w.t, w.admin, id); u != nil {
		phase = u.Phase.String()
	}
	killed := time.Now()
	w.cl.Crash(leader)
	w.admin = w.cl.Leader(20 * time.Second).Admin
	w.t.Logf("leader crashed in promotion %s (phase %s just before); new leader after %v", id, phase, time.Since(killed).Round(time.Millisecond))
	servertest.Eventually(w.t, 20*time.Second, "sessions to resync", func() bool {
		l, err := w.admin.ListSessions(context.Background(), &pb.ListSessionsRequest{})
		if err != nil {
			return false
		}
		n := 0
		for _, s := range l.Sessions {
			if s.Connected {
				n++
			}
		}
		return n == w.instances
	})
}

// runPlan makes every kind of change, one after another, with load in
// between; the promotions and the updates each with every strategy. A
// change the lane's state forbids (an edit with no lane) creates it
// instead, and a create with a lane (a promotion that did not end DONE)
// edits it.
func (w *laneWorld) runPlan(ctx context.Context) {
	cv, wf, bf := pb.Strategy_STRATEGY_CV, pb.Strategy_STRATEGY_WF, pb.Strategy_STRATEGY_BF
	plan := []struct {
		op laneOp
		k  pb.Strategy
	}{{opCreate, 0}, {opUpdate, wf}, {opEdit, 0}, {opPromote, cv}, {opCreate, 0}, {opUpdate, cv},
		{opDelete, 0}, {opCreate, 0}, {opPromote, wf}, {opUpdate, bf}, {opCreate, 0}, {opEdit, 0}, {opPromote, bf}}
	have := false
	for _, p := range plan {
		op := p.op
		if !have && (op == opEdit || op == opDelete || op == opPromote) {
			op = opCreate
		} else if have && op == opCreate {
			op = opEdit
		}
		var what string
		have, what = w.step(ctx, op, p.k)
		w.t.Log(what)
		time.Sleep(time.Duration(150+w.rng.IntN(300)) * time.Millisecond) // load between changes
	}
}

// haveLane says whether the lane exists.
func (w *laneWorld) haveLane(ctx context.Context) bool {
	w.t.Helper()
	l, err := w.admin.ListLanes(ctx, &pb.ListLanesRequest{})
	if err != nil {
		w.t.Fatalf("list lanes: %v", err)
	}
	return len(l.Lanes) > 0
}

// TestLanesKeepTheirGuarantee across a failover: on three replicas, the
// leader is crashed a random moment into the first, second or third
// promotion (cv, wf, bf), and the plan goes on with the new leader, which
// restored the lane, its promotion and the update.
func TestLanesKeepTheirGuaranteeAcrossFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("three replicas, load over random graphs, a kill")
	}
	for i, k := range []string{"cv", "wf", "bf"} {
		t.Run("crash-in-"+k+"-promotion", func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			g, instances := randomLaneGraph(rng, 5+rng.IntN(3))
			t.Logf("graph %v", g)
			w := startLaneCluster(t, rng, g, "s0", instances, i+1)
			ctx := context.Background()
			stop := w.sim.Load(ctx, 80, 30)
			defer stop()
			w.runPlan(ctx)
			stop()
			if w.promotions < i+1 {
				t.Fatalf("%d promotions, the crash was planned in number %d", w.promotions, i+1)
			}
			checkLaneLoad(t, w.sim)
		})
	}
}

// checkLaneLoad fails the test unless lane transactions ran and the
// oracle saw no violation of any kind and no failed request.
func checkLaneLoad(t *testing.T, sim *loadsim.Sim) {
	t.Helper()
	t.Logf("%d requests, %d in the lane", sim.Requests(), sim.LaneTxns())
	if sim.LaneTxns() == 0 {
		t.Error("no transaction ran in the lane")
	}
	if v := sim.Violations(); v != 0 {
		t.Errorf("%d version-inconsistent transactions; first: %s", v, sim.FirstViolation())
	}
	if l := sim.LeftLane(); l != 0 {
		t.Errorf("%d transactions left their lane; first: %s", l, sim.FirstViolation())
	}
	if m := sim.MixedSets(); m != 0 {
		t.Errorf("%d transactions ran a mixed set; first: %s", m, sim.FirstViolation())
	}
	if f := sim.Failed(); f != 0 {
		t.Errorf("%d of %d requests failed; first: %v", f, sim.Requests(), sim.FirstError())
	}
}

// With NaiveLanes (each hop resolves the lane by name in its current
// table, nothing carried in-band), editing and deleting the lane under
// load moves running lane transactions: the oracle sees transactions that
// left their lane or ran on two versions. This proves the checks of
// TestLanesKeepTheirGuarantee can fail.
func TestNaiveLanesLeaveTheirLane(t *testing.T) {
	if testing.Short() {
		t.Skip("load and lane edits")
	}
	g := loadsim.Graph{"a": {"b", "p"}, "b": {"p"}}
	w := startLaneWorld(t, rand.New(rand.NewPCG(1, 2)), g, "a",
		[]string{"a@v1", "b@v1", "b@v2", "p@v1", "p@v2", "p@v3"}, true)
	ctx := context.Background()
	stop := w.sim.Load(ctx, 150, 60)
	defer stop()
	lanes := []*pb.Lane{
		{Name: "gray", Members: []*pb.ServiceVersion{{Service: "b", Version: "v2"}, {Service: "p", Version: "v2"}}},
		{Name: "gray", Members: []*pb.ServiceVersion{{Service: "p", Version: "v3"}}},
	}
	deadline := time.Now().Add(4 * time.Second)
	for i := 0; time.Now().Before(deadline) && w.sim.LeftLane()+w.sim.Violations() < 5; i++ {
		if _, err := w.admin.CreateLane(ctx, &pb.CreateLaneRequest{Lane: lanes[i%2]}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(40 * time.Millisecond)
		if _, err := w.admin.DeleteLane(ctx, &pb.DeleteLaneRequest{Name: "gray"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	t.Logf("%d requests, %d in the lane: %d left their lane, %d on two versions; first: %s",
		w.sim.Requests(), w.sim.LaneTxns(), w.sim.LeftLane(), w.sim.Violations(), w.sim.FirstViolation())
	if w.sim.LeftLane()+w.sim.Violations() == 0 {
		t.Fatal("naive lanes produced no violation: the checker would not see one")
	}
}

// A lane created through a follower (which forwards it) survives the
// leader's crash: the new leader restores it from etcd, lists it, and
// sends it in the first snapshot of a sidecar that connects after the
// failover, whose tagged roots then run in it; the load's lane
// transactions keep their lane across the failover.
func TestLaneSurvivesFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("three replicas and a kill")
	}
	cl, sim := startFailoverWorldConfig(t, flushWritten, failoverInstances, func(c *loadsim.Config) { c.LaneTag = laneTagOf(0.5, "x-env", "on") })
	ctx := context.Background()
	leader := cl.Leader(10 * time.Second)
	lane := &pb.Lane{Name: "gray", Members: []*pb.ServiceVersion{{Service: "d", Version: "v2"}}, Header: "x-env", Tag: "on"}
	created, err := cl.Follower(leader).Admin.CreateLane(ctx, &pb.CreateLaneRequest{Lane: lane})
	if err != nil {
		t.Fatal(err)
	}
	if created.Header != "x-env" || created.Tag != "on" || created.Name != "gray" {
		t.Fatalf("created %v: want gray selected by x-env: on", created)
	}
	stop := sim.Load(ctx, 100, 20)
	defer stop()
	time.Sleep(200 * time.Millisecond)
	cl.Crash(leader)
	next := cl.Leader(20 * time.Second)
	l, err := next.Admin.ListLanes(ctx, &pb.ListLanesRequest{})
	if err != nil || len(l.Lanes) != 1 || !proto.Equal(l.Lanes[0], created) {
		t.Fatalf("lanes after the failover: %v %v, want %v", l, err, created)
	}
	// A sidecar that registers with the new leader gets the lane.
	late, err := sidecar.New(sidecar.Config{Coordinators: cl.Addrs(), InstanceID: "a@v1#late", Service: "a", Version: "v1",
		Address: "sim-a@v1#late", Dependencies: failoverGraph["a"], HeartbeatInterval: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := late.Start(sctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = late.Close(ctx) }()
	tctx, txn := late.BeginFrom(ctx, func(h string) string { return map[string]string{"x-env": "on"}[h] })
	if name, members := txn.Lane(); name != "gray" || members["d"] != "v2" {
		t.Errorf("a root tagged x-env: on at a sidecar registered after the failover runs in lane %q %v, want gray with d=v2", name, members)
	}
	call, err := late.Route(tctx, "d")
	if err != nil || call.Version != "v2" {
		t.Errorf("its call to d: %+v %v, want d@v2", call, err)
	} else {
		call.Finish()
	}
	_ = late.End(tctx)
	time.Sleep(300 * time.Millisecond) // load after the failover
	stop()
	checkLaneLoad(t, sim)
}

// The lanes' REST routes (admin_http.yaml): POST /v1/lanes creates one
// (its body is the lane), GET /v1/lanes lists them, POST
// /v1/lanes/{name}:promote promotes one, DELETE /v1/lanes/{name} deletes
// one; refusals have their HTTP status (400 for a bad lane, 404 for an
// unknown one).
func TestLaneREST(t *testing.T) {
	w := fixedWorld(t, []string{"gateway", "portal", "proc"},
		map[string][]string{"gateway": {"portal", "proc"}}, "portal@v2", "proc@v2")
	base := "http://" + w.ts.HTTPAddr()
	do := func(method, path, body string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, body := do("POST", "/v1/lanes", `{"name":"gray","members":[{"service":"proc","version":"v9"}]}`); code != http.StatusBadRequest ||
		!strings.Contains(string(body), `version v9 of service \"proc\" is not known`) {
		t.Fatalf("POST a lane with an unknown version: HTTP %d %s, want 400", code, body)
	}
	code, body := do("POST", "/v1/lanes", `{"name":"gray","members":[{"service":"proc","version":"v2"},{"service":"portal","version":"v2"}]}`)
	var l pb.Lane
	if code != http.StatusOK || protojson.Unmarshal(body, &l) != nil || l.Header != "x-lane" || l.Tag != "gray" || len(l.Members) != 2 {
		t.Fatalf("POST a lane: HTTP %d %s", code, body)
	}
	var list pb.ListLanesResponse
	if code := w.ts.REST("/v1/lanes", &list); code != http.StatusOK || len(list.Lanes) != 1 || !proto.Equal(list.Lanes[0], &l) {
		t.Fatalf("GET /v1/lanes: HTTP %d %v", code, &list)
	}
	code, body = do("POST", "/v1/lanes/gray:promote", `{"strategy":"STRATEGY_WF"}`)
	var u pb.Update
	if code != http.StatusOK || protojson.Unmarshal(body, &u) != nil || len(u.Members) != 2 {
		t.Fatalf("POST :promote: HTTP %d %s", code, body)
	}
	w.waitFinished(u.Id, 30*time.Second)
	servertest.Eventually(t, 10*time.Second, "the promoted lane to be deleted", func() bool {
		var list pb.ListLanesResponse
		return w.ts.REST("/v1/lanes", &list) == http.StatusOK && len(list.Lanes) == 0
	})
	if code, body := do("DELETE", "/v1/lanes/gray", ""); code != http.StatusNotFound {
		t.Fatalf("DELETE a promoted lane: HTTP %d %s, want 404", code, body)
	}
	if code, body := do("POST", "/v1/lanes", `{"name":"blue","members":[{"service":"proc","version":"v1"}],"header":"x-env","tag":"b"}`); code != http.StatusOK {
		t.Fatalf("POST blue: HTTP %d %s", code, body)
	}
	if code, body := do("DELETE", "/v1/lanes/blue", ""); code != http.StatusOK || !strings.Contains(string(body), `"blue"`) {
		t.Fatalf("DELETE blue: HTTP %d %s", code, body)
	}
}

// A lane call whose lane version has no endpoint fails with
// ErrNoLaneEndpoint (wrapping ErrNoEndpoint) rather than leave its lane;
// a transaction outside the lane, and a call to a service outside the
// lane, go to the default as before. The SDK sends the lane with the
// transaction in HeaderLane.
func TestLaneCallWithoutEndpointFails(t *testing.T) {
	ts := servertest.Start(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := func(inst, svc, ver string, deps ...string) *sidecar.Client {
		c, err := sidecar.New(sidecar.Config{Coordinators: []string{ts.GRPCAddr()}, InstanceID: inst, Service: svc, Version: ver,
			Address: "addr-" + inst, Dependencies: deps, HeartbeatInterval: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	a := start("a-1", "a", "v1", "b", "c")
	start("b-1", "b", "v1")
	b2 := start("b-2", "b", "v2")
	start("c-1", "c", "v1")
	if _, err := ts.Admin.CreateLane(ctx, &pb.CreateLaneRequest{Lane: &pb.Lane{Name: "gray", Members: []*pb.ServiceVersion{{Service: "b", Version: "v2"}}}}); err != nil {
		t.Fatal(err)
	}
	tagged := func(h string) string { return map[string]string{"x-lane": "gray"}[h] }
	servertest.Eventually(t, 10*time.Second, "a lane call to reach b@v2", func() bool {
		tctx, txn := a.BeginFrom(ctx, tagged)
		defer a.End(tctx)
		if name, _ := txn.Lane(); name == "" {
			return false // the lane has not reached a yet
		}
		call, err := a.Route(tctx, "b")
		if err != nil {
			t.Fatalf("lane call: %v", err)
		}
		call.Finish()
		h := map[string]string{}
		call.SetHeaders(func(k, v string) { h[k] = v })
		if h[sidecar.HeaderLane] != "gray;b=v2" {
			t.Fatalf("lane header %q, want gray;b=v2", h[sidecar.HeaderLane])
		}
		return call.Version == "v2" && call.Address == "addr-b-2"
	})
	if err := b2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, "a lane call to b to fail once b@v2 is gone", func() bool {
		tctx, _ := a.BeginFrom(ctx, tagged)
		defer a.End(tctx)
		call, err := a.Route(tctx, "b")
		if err == nil {
			call.Finish()
			if call.Version != "v2" {
				t.Fatalf("a lane call left its lane: b@%s", call.Version)
			}
			return false
		}
		if !errors.Is(err, sidecar.ErrNoLaneEndpoint) || !errors.Is(err, sidecar.ErrNoEndpoint) || !strings.Contains(err.Error(), "lane gray") {
			t.Fatalf("lane call error %v, want ErrNoLaneEndpoint naming the lane", err)
		}
		// Outside the lane, and to services outside it, calls go on.
		if call, err := a.Route(tctx, "c"); err != nil || call.Version != "v1" {
			t.Fatalf("lane transaction's call to c: %+v %v", call, err)
		} else {
			call.Finish()
		}
		return true
	})
	tctx, _ := a.Begin(ctx)
	defer a.End(tctx)
	if call, err := a.Route(tctx, "b"); err != nil || call.Version != "v1" {
		t.Fatalf("a call outside the lane: %+v %v, want b@v1", call, err)
	} else {
		call.Finish()
	}
}
