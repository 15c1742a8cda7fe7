package integration

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Routing is scoped (DESIGN.md §4.1): a sidecar gets the routes of the
// services its service may call. These tests update a service, s3, that
// no sidecar could call when the update started: every edge into it is
// hidden (no registration declares it), and transactions take those
// edges only once the update has begun. The callers then learn an edge to
// s3, either by calling it (a waiting CALL outside their scope, decided by
// the coordinator; the edge is learned) or because a new instance of the
// caller registers declaring it. Either way the caller must be in update
// mode for s3 before its first call to s3 is routed: the oracle sees no
// transaction on two versions of s3, with random load and transactions
// that call s3, pause across the update, and call it again.
func TestUpdatesWithEdgesLearnedDuringTheUpdate(t *testing.T) {
	for _, k := range []pb.Strategy{pb.Strategy_STRATEGY_WF, pb.Strategy_STRATEGY_BF, pb.Strategy_STRATEGY_CV} {
		for _, byCall := range []bool{true, false} {
			name := consistencyName(k, false) + "/declared"
			if byCall {
				name = consistencyName(k, false) + "/called"
			}
			t.Run(name, func(t *testing.T) { checkLearnedDuringUpdate(t, k, byCall) })
		}
	}
}

const learnTarget = "s3"

// learnWorld is a world of 6 services where the edges into s3 are late,
// s0 -> s3 among them. The random load takes the late edges of every
// caller but s2, whose first call to s3 is left to pausedLate.
func learnWorld(t *testing.T, seed uint64) *world {
	rng := rand.New(rand.NewPCG(seed, 1))
	w := buildWorld(t, nil, rng, 6, 0.4, learnTarget, learnTarget+"@v2")
	if !slices.Contains(w.late["s0"], learnTarget) {
		w.late["s0"] = append(w.late["s0"], learnTarget)
	}
	delete(w.late, "s2")
	return w
}

// declareLate registers, for each caller of s3, one more instance that
// declares the edges no registration declared: the sessions of its
// service get s3 in their scope.
func (w *world) declareLate() {
	w.t.Helper()
	lates := maps.Clone(w.late)
	lates["s2"] = []string{learnTarget}
	for svc, late := range lates {
		w.ts.Register(&pb.Register{
			InstanceId: svc + "-late", Service: svc, Version: "v1", Address: "sim:" + svc + "-late",
			Dependencies: append(slices.Clone(w.succ[svc]), late...), HeartbeatInterval: durationpb.New(time.Minute),
		})
	}
}

// pausedLate starts n transactions whose entry s0 calls s3 directly (a
// late edge), waits at gate, then calls s3 along s0 -> s1 -> s2 -> s3: s2's
// first call to s3 (another late edge) comes after the gate, and must be
// decided by the update as the first one was.
func (w *world) pausedLate(ctx context.Context, n int, gate <-chan struct{}) (wait func() error) {
	w.t.Helper()
	chain := func(g <-chan struct{}) call {
		p := &plan{svc: learnTarget}
		for i := slices.Index(w.svcs, learnTarget) - 1; i >= 1; i-- {
			p = &plan{svc: w.svcs[i], calls: []call{{to: p.svc, child: p}}}
		}
		return call{to: p.svc, gate: g, child: p}
	}
	before := w.ranOn(learnTarget, "")
	errs := make(chan error, n)
	for range n {
		root := &plan{svc: w.svcs[0], calls: []call{{to: learnTarget, child: &plan{svc: learnTarget}}, chain(gate)}}
		id := fmt.Sprintf("paused-late-%d", w.pausedN.Add(1))
		go func() { errs <- w.run(ctx, id, root) }()
	}
	servertest.Eventually(w.t, 10*time.Second, "paused transactions to use "+learnTarget, func() bool {
		return w.ranOn(learnTarget, "") >= before+n
	})
	return func() error {
		var first error
		for range n {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		return first
	}
}

func checkLearnedDuringUpdate(t *testing.T, k pb.Strategy, byCall bool) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	w := learnWorld(t, seed)
	if len(w.late) == 0 {
		t.Fatalf("no late edge into %s", learnTarget)
	}
	for svc := range w.late {
		if w.inst[svc]["v1"].Route(learnTarget) != nil {
			t.Fatalf("%s has %s in its routing before any edge to it", svc, learnTarget)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stop := make(chan struct{})
	wait := w.load(ctx, seed, 6, false, stop)
	time.Sleep(time.Duration(50+rand.IntN(150)) * time.Millisecond)
	if n := w.ranOn(learnTarget, ""); n != 0 {
		t.Fatalf("%d transactions used %s before the update", n, learnTarget)
	}

	u := w.startUpdate(learnTarget, "v2", k, 20*time.Second, 10*time.Second)
	if !byCall {
		w.declareLate()
	}
	w.useLate.Store(true)
	gate := make(chan struct{})
	paused := w.pausedLate(ctx, 3, gate)
	w.waitPhase(u.Id, openPhase(k))
	close(gate)
	if err := paused(); err != nil {
		t.Fatal(err)
	}
	u, stop, wait = w.finishUnderLoad(ctx, t, u.Id, k, seed+1, false, stop, wait)
	w.endLoadConsistent(t, u, stop, wait)
	if n := w.ranOn(learnTarget, "v2"); n == 0 {
		t.Fatalf("no transaction ran on %s@v2 after the update", learnTarget)
	}
	for _, svc := range []string{"s0", "s2"} {
		if r := w.inst[svc]["v1"].Route(learnTarget); r == nil {
			t.Errorf("%s learned an edge to %s but has no route to it", svc, learnTarget)
		}
	}
	t.Logf("%d transactions, %d calls; %d ran on %s@v2; history %v", w.txns.Load(), w.calls.Load(),
		w.ranOn(learnTarget, "v2"), learnTarget, phases(u))
}

// The same shape with NAIVE (no update mode, no pinning) breaks the
// transactions that used s3 before the switch and call it again after:
// the oracle of the test above sees violations when there are some.
func TestNaiveUpdateWithLearnedEdgesBreaksTransactions(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	w := learnWorld(t, seed)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w.useLate.Store(true)
	stop := make(chan struct{})
	wait := w.load(ctx, seed, 4, false, stop)
	gate := make(chan struct{})
	paused := w.pausedLate(ctx, 3, gate)
	u := w.startUpdate(learnTarget, "v2", pb.Strategy_STRATEGY_NAIVE, 0, 0)
	if u = w.waitFinished(u.Id, 10*time.Second); u.Phase != pb.Phase_PHASE_DONE {
		t.Fatalf("NAIVE update ended %s, want DONE", u.Phase)
	}
	close(gate)
	if err := paused(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	v := w.violations()
	if len(v) < 3 {
		t.Fatalf("NAIVE: %d violations %v, want at least the 3 paused transactions", len(v), v)
	}
	t.Logf("NAIVE: %d violations of %d transactions", len(v), w.txns.Load())
}
