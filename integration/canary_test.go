package integration

import (
	"bytes"
	"context"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/loadsim"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// TestCanaryKeepsVersionConsistency runs random transactions over a random
// service graph while s2 goes through a canary, step by step (promoted by
// hand, under load), to the switch and DONE. Transactions that used s2
// before the canary call it again during it, and transactions that used
// it during a step call it again after the switch: the oracle must see no
// transaction on two versions, each step must have assigned transactions
// to both versions as its weight says, and NAIVE on the same shape must
// show violations (the oracle sees them).
func TestCanaryKeepsVersionConsistency(t *testing.T) {
	for _, hints := range []bool{false, true} {
		t.Run(consistencyName(pb.Strategy_STRATEGY_CV, hints), func(t *testing.T) { checkCanaryConsistency(t, hints, nil) })
	}
	t.Run("NAIVE", func(t *testing.T) {
		seed := uint64(time.Now().UnixNano())
		t.Logf("seed %d", seed)
		w := newWorld(t, rand.New(rand.NewPCG(seed, 1)), 6, 0.4, "s2@v2")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		stop := make(chan struct{})
		wait := w.load(ctx, seed, 6, false, stop)
		gate := make(chan struct{})
		paused := w.paused(ctx, "s2", 3, gate)
		u := w.startUpdate("s2", "v2", pb.Strategy_STRATEGY_NAIVE, 0, 0)
		if u = w.waitFinished(u.Id, 10*time.Second); u.Phase != pb.Phase_PHASE_DONE {
			t.Fatalf("NAIVE update ended %s", u.Phase)
		}
		w.inst["s1"]["v1"].WaitRouting(ctx, func(*pb.Routing) bool { return w.inst["s1"]["v1"].Route("s2").GetDefaultVersion() == "v2" })
		close(gate)
		if err := paused(); err != nil {
			t.Fatal(err)
		}
		close(stop)
		if err := wait(); err != nil {
			t.Fatal(err)
		}
		if v := w.violations(); len(v) < 3 {
			t.Fatalf("NAIVE: %d violations %v, want at least the 3 paused transactions", len(v), v)
		}
	})
}

// checkCanaryConsistency runs a canary of s2 (with set, of the set: its
// members s2 and s4, DESIGN.md §4.8) under random load, promoted by hand.
// With a set, the transactions paused use s2 and call s4 once let go, and
// no transaction may run a mixed set.
func checkCanaryConsistency(t *testing.T, hints bool, set updateSet) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	extra := []string{"s2@v2"}
	if set != nil {
		extra = append(extra, "s4@v2")
	}
	w := newWorld(t, rng, 6, 0.4, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stop := make(chan struct{})
	wait := w.load(ctx, seed, 6, hints, stop)
	// paused starts n transactions that use s2 and wait at gate, then call
	// s2 again (with a set: s4).
	paused := func(n int, gate <-chan struct{}) func() error {
		if set != nil {
			return w.crossPaused(ctx, "s2", "s4", n, gate)
		}
		return w.paused(ctx, "s2", n, gate)
	}
	before := make(chan struct{})
	beforeDone := paused(3, before) // used s2@v1 before the canary
	steps := []uint32{10, 30, 60, 100}
	req := &pb.StartUpdateRequest{Service: "s2", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV,
		CanarySteps: steps, PrepareTimeout: durationpb.New(20 * time.Second)}
	if set != nil {
		req.Service, req.ToVersion, req.Members = "", "", set.members()
	}
	u, err := w.ts.Admin.StartUpdate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	w.waitPhase(u.Id, pb.Phase_PHASE_CANARY)
	var during chan struct{}
	var duringDone func() error
	for i := range len(steps) - 1 {
		// Let the step assign both versions: at least 3 transactions to
		// the new one (the weights are exact: 3/w% new to s2 do it).
		need := uint64(3)
		servertest.Eventually(t, 30*time.Second, "the step to assign transactions to both versions", func() bool {
			g, err := w.ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
			if err != nil {
				t.Fatal(err)
			}
			st := g.Canary.StepsServed[i]
			return st.NewTransactions >= need && st.OldTransactions >= need
		})
		switch i {
		case 0:
			close(before) // they call s2 again mid-canary: v1 still
			if err := beforeDone(); err != nil {
				t.Fatal(err)
			}
		case 1:
			// Used s2 in this step; call it again after the switch.
			during = make(chan struct{})
			duringDone = paused(4, during)
		}
		p, err := w.ts.Admin.PromoteUpdate(ctx, &pb.PromoteUpdateRequest{Id: u.Id})
		if err != nil {
			t.Fatalf("promote from step %d: %v", i+1, err)
		}
		if i < len(steps)-2 && (p.Phase != pb.Phase_PHASE_CANARY || p.Canary.Step != uint32(i+1)) {
			t.Fatalf("promote from step %d: %s step %d", i+1, p.Phase, p.Canary.Step+1)
		}
	}
	w.waitPhase(u.Id, pb.Phase_PHASE_DRAINING)
	close(during)
	if err := duringDone(); err != nil {
		t.Fatal(err)
	}
	u = w.waitFinished(u.Id, 30*time.Second)
	w.endLoadConsistent(t, u, stop, wait)
	if len(u.Canary.StepsServed) != len(steps) {
		t.Fatalf("%d steps served, want %d", len(u.Canary.StepsServed), len(steps))
	}
	checkServedWeights(t, u)
	if set != nil {
		if m := w.mixedSets(set); len(m) > 0 {
			t.Fatalf("%d transactions ran a mixed set (of %d), e.g. %v", len(m), w.txns.Load(), m[:min(5, len(m))])
		}
		if w.ranOn("s4", "v2") == 0 {
			t.Fatalf("no transaction ran on s4@v2")
		}
	}
	t.Logf("%d transactions, %d calls; steps %v; history %v", w.txns.Load(), w.calls.Load(), u.Canary.StepsServed, phases(u))
}

// A leader killed during a canary step: the new leader resumes the canary
// at its step, paused as it was, with the weight in force (new
// transactions are still assigned the new version), and transactions
// assigned either version before the kill stay there.
func TestFailoverInCanaryStep(t *testing.T) {
	if testing.Short() {
		t.Skip("three replicas, a kill and lease expiries")
	}
	cl, sim := startFailoverWorld(t, 2*time.Millisecond)
	ctx := context.Background()
	leader := cl.Leader(10 * time.Second)
	admin := cl.Follower(leader).Admin
	u, err := admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "d", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV,
		CanarySteps: []uint32{50, 100}})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 20*time.Second, "CANARY", func() bool {
		g := getUpdate(t, admin, u.Id)
		return g != nil && g.Phase == pb.Phase_PHASE_CANARY
	})
	// Four transactions use d one after the other, with nothing else new
	// to d meanwhile: at 50% two are assigned each version.
	c := sim.Client("c@v1")
	type blocker struct {
		ctx     context.Context
		version string
	}
	var blockers []blocker
	onNew := 0
	for range 4 {
		tctx, _ := c.Begin(ctx)
		call, err := c.Route(tctx, "d")
		if err != nil {
			t.Fatal(err)
		}
		call.Finish()
		blockers = append(blockers, blocker{tctx, call.Version})
		if call.Version == "v2" {
			onNew++
		}
	}
	if onNew != 2 {
		t.Fatalf("%d of 4 transactions assigned d@v2 at 50%%", onNew)
	}
	stop := sim.Load(ctx, 100, 20)
	defer stop()
	time.Sleep(300 * time.Millisecond)
	if _, err := admin.PauseUpdate(ctx, &pb.PauseUpdateRequest{Id: u.Id}); err != nil {
		t.Fatal(err)
	}
	before := getUpdate(t, admin, u.Id).Canary.StepsServed[0]

	cl.Crash(leader)
	next := cl.Leader(20 * time.Second)
	admin = next.Admin
	awaitConnected(t, admin, len(failoverInstances))
	g := getUpdate(t, admin, u.Id)
	if g == nil || g.Phase != pb.Phase_PHASE_CANARY || !g.Canary.Paused || g.Canary.Step != 0 {
		t.Fatalf("after the failover: %v paused=%v step=%d, want CANARY, paused, step 1", g.GetPhase(), g.GetCanary().GetPaused(), g.GetCanary().GetStep()+1)
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
	// The weight is still in force: new transactions go to v2 too.
	servertest.Eventually(t, 20*time.Second, "the new leader to assign d@v2", func() bool {
		g := getUpdate(t, admin, u.Id)
		return g != nil && g.Canary.StepsServed[0].NewTransactions > before.NewTransactions+5
	})
	if _, err := admin.ResumeUpdate(ctx, &pb.ResumeUpdateRequest{Id: u.Id}); err != nil {
		t.Fatal(err)
	}
	if p, err := admin.PromoteUpdate(ctx, &pb.PromoteUpdateRequest{Id: u.Id}); err != nil || p.Phase != pb.Phase_PHASE_DRAINING {
		t.Fatalf("promote to the switch: %v %v", p.GetPhase(), err)
	}
	for _, b := range blockers {
		if err := c.End(b.ctx); err != nil {
			t.Fatal(err)
		}
	}
	awaitDoneConsistent(t, time.Minute, func() *pb.Update { return getUpdate(t, admin, u.Id) }, stop, sim)
}

// The analysis over real load: a d@v2 that fails 20% of its calls is
// aborted automatically at its first step (manual, so nothing else moves
// it), the reason naming the error rates and the window; a healthy d@v2 is
// promoted through every step by its interval to DONE. Neither breaks a
// transaction. The canary of the set {c, d} is judged over both members'
// outcomes: a c@v2 that fails half its calls aborts it, though d@v2 is
// healthy.
func TestCanaryAnalysis(t *testing.T) {
	for _, tc := range []struct {
		name    string
		failPct int
		set     bool
	}{{"failing", 20, false}, {"healthy", 0, false}, {"set/failing", 50, true}} {
		t.Run(tc.name, func(t *testing.T) {
			ts := servertest.Start(t, "")
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			instances, failing := failoverInstances, "d"
			if tc.set {
				instances, failing = failoverSetInstances, "c"
			}
			sim, err := loadsim.Start(ctx, loadsim.Config{Coordinators: []string{ts.GRPCAddr()}, Graph: failoverGraph,
				Instances: instances, Entry: "a",
				Fail: func(svc, version string, rng *rand.Rand) bool {
					return svc == failing && version == "v2" && rng.IntN(100) < tc.failPct
				}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(sim.Close)
			if tc.set {
				sim.WatchSet(failoverSet)
			}
			stop := sim.Load(ctx, 200, 10)
			defer stop()
			req := &pb.StartUpdateRequest{Service: "d", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV,
				CanarySteps: []uint32{10, 50, 100}, MaxErrorRate: 0.05, AnalysisWindow: durationpb.New(5 * time.Second)}
			if tc.set {
				req.Service, req.ToVersion = "", ""
				req.Members = []*pb.ServiceVersion{{Service: "c", Version: "v2"}, {Service: "d", Version: "v2"}}
			}
			if tc.failPct == 0 {
				req.StepInterval = durationpb.New(time.Second)
			}
			u, err := ts.Admin.StartUpdate(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			var g *pb.Update
			servertest.Eventually(t, time.Minute, "the update to finish", func() bool {
				g, err = ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
				return err == nil && g.FinishedAt != nil && g.Progress == nil
			})
			stop()
			if v := sim.Violations(); v != 0 {
				t.Errorf("%d version-inconsistent transactions; first: %s", v, sim.FirstViolation())
			}
			if m := sim.MixedSets(); m != 0 {
				t.Errorf("%d transactions ran a mixed set; first: %s", m, sim.FirstViolation())
			}
			if tc.failPct > 0 {
				if g.Phase != pb.Phase_PHASE_ABORTED || !strings.Contains(g.Reason, "analysis: error rate of the new version") ||
					!strings.Contains(g.Reason, "over the last 5s") || len(g.Canary.StepsServed) != 1 {
					t.Fatalf("failing v2: %s at step %d: %q, want ABORTED by the analysis in step 1", g.Phase, len(g.Canary.StepsServed), g.Reason)
				}
				t.Logf("aborted: %s (%d calls failed)", g.Reason, sim.Errored())
				return
			}
			if g.Phase != pb.Phase_PHASE_DONE || len(g.Canary.StepsServed) != 3 {
				t.Fatalf("healthy v2: %s (%q) after %d steps, want DONE through 3", g.Phase, g.Reason, len(g.Canary.StepsServed))
			}
			if f := sim.Failed(); f != 0 {
				t.Errorf("%d requests failed: %v", f, sim.FirstError())
			}
			t.Logf("history %v, steps %v", phases(g), g.Canary.StepsServed)
		})
	}
}

// A canary over REST: started with its steps, paused, resumed and promoted
// to the switch by POST /v1/updates/{id}:pause, :resume, :promote; a
// promote past the canary is a 400 saying why.
func TestCanaryREST(t *testing.T) {
	w := chainWorld(t)
	base := "http://" + w.ts.HTTPAddr()
	post := func(path, body string) (int, *pb.Update, string) {
		t.Helper()
		resp, err := http.Post(base+path, "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var u pb.Update
		if resp.StatusCode == http.StatusOK {
			if err := protojson.Unmarshal(b, &u); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, &u, string(b)
	}
	code, u, body := post("/v1/services/s1/updates", `{"toVersion":"v2","strategy":"STRATEGY_CV","canarySteps":[50,100]}`)
	if code != http.StatusOK || len(u.Canary.GetSteps()) != 2 {
		t.Fatalf("POST updates with canarySteps: HTTP %d %s", code, body)
	}
	w.waitPhase(u.Id, pb.Phase_PHASE_CANARY)
	if code, g, body := post("/v1/updates/"+u.Id+":pause", `{}`); code != http.StatusOK || !g.Canary.Paused {
		t.Fatalf(":pause: HTTP %d %s", code, body)
	}
	if code, g, body := post("/v1/updates/"+u.Id+":resume", `{}`); code != http.StatusOK || g.Canary.Paused {
		t.Fatalf(":resume: HTTP %d %s", code, body)
	}
	if code, g, body := post("/v1/updates/"+u.Id+":promote", `{}`); code != http.StatusOK || g.Phase != pb.Phase_PHASE_DRAINING {
		t.Fatalf(":promote: HTTP %d %s", code, body)
	}
	if code, _, body := post("/v1/updates/"+u.Id+":promote", `{}`); code != http.StatusBadRequest || !strings.Contains(body, "not in a canary step") {
		t.Fatalf(":promote after the switch: HTTP %d %s, want 400", code, body)
	}
}

// TestAuthDemoCanary runs the demo with --canary 10,50,100, of Auth and
// (--set) of the set portal+proc: the update goes through each step to
// DONE with no failed request and no violation (with the set: no mixed
// set either), its last line says strategy=canary, and it logs each step's
// weights.
func TestAuthDemoCanary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo")
	}
	bin := buildBinary(t, "examples/authdemo")
	for _, set := range []bool{false, true} {
		args := []string{"--strategy=cv", "--canary=10,50,100", "--canary-step=300ms", "--duration=2s", "--update-after=300ms"}
		subject := "auth-service"
		if set {
			args, subject = append(args, "--set"), "portal+proc"
		}
		checkAuthDemoCanary(t, bin, args, subject)
	}
}

func checkAuthDemoCanary(t *testing.T, bin string, args []string, subject string) {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("authdemo %v: %v\n%s", args, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	m := regexp.MustCompile(`^strategy=canary requests=(\d+) failed=(\d+) violations=(\d+) update_ms=(\d+) p99_ms=([\d.]+)$`).FindStringSubmatch(lines[len(lines)-1])
	if m == nil || m[1] == "0" || m[2] != "0" || m[3] != "0" {
		t.Fatalf("authdemo --canary: last line %q, want strategy=canary with requests > 0, failed=0, violations=0\n%s", lines[len(lines)-1], out)
	}
	for _, want := range []string{"of " + subject + " to v2 (canary): DONE", "canary step 1: asked 10%", "canary step 2: asked 50%", "canary step 3: asked 100%"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("authdemo --canary: no %q in\n%s", want, out)
		}
	}
}

// TestUpdateBenchCanary runs bench/update -strategies canary with short
// steps: it prints one line per step (asked and served weights, served
// counted from the versions the simulated svc-d recorded serving) before
// its strategy=canary line, with no violation. (Its accuracy at 500
// transactions/s over 10 s steps is measured by running it, not here.)
func TestUpdateBenchCanary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the benchmark")
	}
	bin := buildBinary(t, "bench/update")
	out, err := exec.Command(bin, "-strategies", "canary", "-canary-steps", "20,60,100", "-canary-step", "700ms",
		"-rate", "200", "-warmup", "300ms").Output()
	if err != nil {
		t.Fatalf("bench/update -strategies canary: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 3 step lines and the strategy line:\n%s", len(lines), out)
	}
	step := regexp.MustCompile(`^canary step=(\d) asked_pct=(\d+) served_pct=([\d.]+) txns=(\d+)$`)
	for i, asked := range []float64{20, 60, 100} {
		m := step.FindStringSubmatch(lines[i])
		if m == nil || m[1] != strconv.Itoa(i+1) {
			t.Fatalf("line %d %q: want canary step=%d asked_pct=A served_pct=S txns=N", i+1, lines[i], i+1)
		}
		served, _ := strconv.ParseFloat(m[3], 64)
		if n, _ := strconv.Atoi(m[4]); n < 20 || math.Abs(served-asked) > 10 {
			t.Errorf("step %d: %d transactions, served %.1f%% for %v%% asked", i+1, n, served, asked)
		}
	}
	if !regexp.MustCompile(`^strategy=canary switch_ms=\d+ done_ms=\d+ .* violations=0 tls=off$`).MatchString(lines[3]) {
		t.Fatalf("last line %q", lines[3])
	}
}
