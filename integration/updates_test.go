package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/etcdgate"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// TestUpdatesKeepVersionConsistency runs random transactions over a random
// service graph, starts an update of a service at a random moment, and
// checks the oracle: with WF, BF and CV no transaction runs on two versions
// of one service, the update finishes, and later transactions run on the
// new version. Each strategy runs with and without done hints.
func TestUpdatesKeepVersionConsistency(t *testing.T) {
	for _, k := range []pb.Strategy{pb.Strategy_STRATEGY_WF, pb.Strategy_STRATEGY_BF, pb.Strategy_STRATEGY_CV} {
		for _, hints := range []bool{false, true} {
			t.Run(consistencyName(k, hints), func(t *testing.T) { checkUpdateConsistency(t, k, hints, false) })
		}
	}
}

// TestUpdatesKeepVersionConsistencyWithSlowPhaseWrites is the same with a
// slow etcd for the update records: every phase write is delayed by a
// random 20 to 100 ms, and the write that follows WAITING (the switch) is
// held at a gate while the load goes on. Calls to the service decided
// while its switch is stored would run on the old version after the switch
// was decided: the oracle must still see no violation, and the event path
// must keep acknowledging batches while the write is held.
func TestUpdatesKeepVersionConsistencyWithSlowPhaseWrites(t *testing.T) {
	for _, k := range []pb.Strategy{pb.Strategy_STRATEGY_WF, pb.Strategy_STRATEGY_BF} {
		for _, hints := range []bool{false, true} {
			t.Run(consistencyName(k, hints), func(t *testing.T) { checkUpdateConsistency(t, k, hints, true) })
		}
	}
}

func consistencyName(k pb.Strategy, hints bool) string {
	name := strings.TrimPrefix(k.String(), "STRATEGY_")
	if hints {
		name += "/hints"
	}
	return name
}

// checkUpdateConsistency updates s2 to v2 with strategy k under random load
// and checks the oracle; slow makes the update records' writes slow (see
// TestUpdatesKeepVersionConsistencyWithSlowPhaseWrites).
func checkUpdateConsistency(t *testing.T, k pb.Strategy, hints, slow bool) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	var gate *etcdgate.KV
	var opts []servertest.Option
	if slow {
		opts = append(opts, servertest.GateUpdateWrites(&gate))
	}
	w := newWorldWith(t, opts, rng, 6, 0.4, "s2@v2")
	if slow {
		t.Cleanup(gate.Release) // before the replica stops
		gate.SetDelay(time.Duration(20+rng.IntN(80)) * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stop := make(chan struct{})
	wait := w.load(ctx, seed, 6, hints, stop)
	// Besides the random load, transactions that used s2 and
	// call it again only after the update has started (CV:
	// after the switch): the shape the update must not break.
	paused := make(chan struct{})
	pausedDone := w.paused(ctx, "s2", 3, paused)
	time.Sleep(time.Duration(50+rng.IntN(200)) * time.Millisecond)
	u := w.startUpdate("s2", "v2", k, 20*time.Second, 10*time.Second)
	w.waitPhase(u.Id, openPhase(k))
	close(paused)
	if err := pausedDone(); err != nil {
		t.Fatal(err)
	}
	if slow {
		gate.Hold() // the next write: the switch (or an abort)
	}
	if k == pb.Strategy_STRATEGY_WF {
		// WF may never find s2 free under unbounded load (DESIGN
		// §4): once the paused transactions have re-called s2
		// during the update, the load pauses until the switch.
		close(stop)
		if err := wait(); err != nil {
			t.Fatalf("load: %v", err)
		}
		stop = make(chan struct{})
		if slow {
			// The switch is decided and its write held: the load
			// comes back while s2 is switching, and transactions
			// that call s2 now and again once the update is over.
			w.heldSwitch(gate)
			wait = w.load(ctx, seed+1, 6, hints, stop)
			again := make(chan struct{})
			late := w.startPaused(ctx, "s2", 3, again)
			w.eventPathGoesOn(gate)
			gate.Release()
			u = w.waitFinished(u.Id, 30*time.Second)
			w.waitDefault("s2", "v2")
			close(again)
			if err := late(); err != nil {
				t.Fatal(err)
			}
		} else {
			u = w.waitFinished(u.Id, 30*time.Second)
			wait = w.load(ctx, seed+1, 6, hints, stop)
		}
	} else {
		if slow {
			w.heldSwitch(gate)
			w.eventPathGoesOn(gate)
			gate.Release()
		}
		u = w.waitFinished(u.Id, 30*time.Second)
	}
	w.endLoadConsistent(t, u, stop, wait)
	if n := w.ranOn("s2", "v2"); n == 0 {
		t.Fatalf("no transaction ran on s2@v2 after the update")
	}
	t.Logf("%d transactions, %d calls; %d ran on s2@v2; history %v", w.txns.Load(), w.calls.Load(), w.ranOn("s2", "v2"), phases(u))
}

// heldSwitch waits until a write of an update record waits at the gate.
func (w *world) heldSwitch(gate *etcdgate.KV) {
	w.t.Helper()
	servertest.Eventually(w.t, 30*time.Second, "the switch's write to be held", func() bool { return gate.Waiting() > 0 })
}

// waitDefault waits until every sidecar that may call svc (routing is
// scoped: svc is in its routing) routes calls to svc to version without
// asking the coordinator (update mode over); the others have no route to
// svc (they would ask).
func (w *world) waitDefault(svc, version string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for from, m := range w.inst {
		calls := slices.Contains(w.succ[from], svc)
		for _, sc := range m {
			if err := sc.WaitRouting(ctx, func(*pb.Routing) bool {
				r := sc.Route(svc)
				if !calls {
					return r == nil
				}
				return r.GetDefaultVersion() == version && !r.GetUpdateMode()
			}); err != nil {
				w.t.Fatalf("routing of %s to %s without update mode: %v", svc, version, err)
			}
		}
	}
}

// eventPathGoesOn checks, for 300 ms while a phase write is held, that
// batches of the entry's stream are applied and acknowledged within a
// second each, and that the write is still held after.
func (w *world) eventPathGoesOn(gate *etcdgate.KV) {
	w.t.Helper()
	sc := w.inst[w.svcs[0]]["v1"]
	for i := 0; i < 6; i++ {
		txn := fmt.Sprintf("probe-%d", w.subs.Add(1))
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ack, err := sc.Send(ctx, simsidecar.Begin(txn, w.subs.Add(1)), simsidecar.End(txn))
		cancel()
		if err != nil || len(ack.Errors) > 0 {
			w.t.Fatalf("a batch while the phase write is held: %v %v, want acknowledged within 1s", ack.GetErrors(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if gate.Waiting() == 0 {
		w.t.Fatal("the phase write was not held throughout")
	}
}

// TestNaiveUpdateBreaksTransactions proves the oracle sees violations: with
// transactions paused between two calls of the updated service, a NAIVE
// switch makes them run on both versions.
func TestNaiveUpdateBreaksTransactions(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	w := newWorld(t, rng, 4, 0.3, "s1@v2")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stop := make(chan struct{})
	wait := w.load(ctx, seed, 4, false, stop)
	gate := make(chan struct{})
	paused := w.paused(ctx, "s1", 3, gate)
	u := w.startUpdate("s1", "v2", pb.Strategy_STRATEGY_NAIVE, 0, 0)
	if u = w.waitFinished(u.Id, 10*time.Second); u.Phase != pb.Phase_PHASE_DONE {
		t.Fatalf("NAIVE update ended %s, want DONE", u.Phase)
	}
	w.inst["s0"]["v1"].WaitRouting(ctx, func(r *pb.Routing) bool {
		return w.inst["s0"]["v1"].Route("s1").GetDefaultVersion() == "v2"
	})
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

func phases(u *pb.Update) []string {
	var out []string
	for _, h := range u.History {
		out = append(out, strings.TrimPrefix(h.Phase.String(), "PHASE_"))
	}
	return out
}
