package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// world is a simulated system for update tests: a random static DAG of
// services, one simulated sidecar per service instance, and transactions
// executed by walking random plans over the graph. Every sub-transaction
// records which version it ran on; the oracle checks that no transaction
// ran on two versions of one service.
type world struct {
	t       *testing.T
	ts      *servertest.Server
	svcs    []string
	succ    map[string][]string
	inst    map[string]map[string]*simsidecar.Sidecar // service -> version -> sidecar
	mu      sync.Mutex
	ran     map[string]map[string]map[string]bool // txn -> service -> versions
	subs    atomic.Uint64
	txns    atomic.Int64
	calls   atomic.Int64
	pausedN atomic.Int64
	loads   atomic.Int64
	// late are edges no registration declares: plans take them once
	// useLate is set, and the calls learn them (learned_test.go).
	late    map[string][]string
	useLate atomic.Bool
}

// newWorld builds n services s0..s(n-1) with s0 the entry; edge i->j (i<j)
// with probability p, plus a path s0->s1->...->target so the target is
// reachable. Each service gets a v1 instance; extra lists more instances
// ("service@version").
func newWorld(t *testing.T, rng *rand.Rand, n int, p float64, extra ...string) *world {
	return newWorldWith(t, nil, rng, n, p, extra...)
}

// newWorldWith is newWorld on a replica started with opts.
func newWorldWith(t *testing.T, opts []servertest.Option, rng *rand.Rand, n int, p float64, extra ...string) *world {
	return buildWorld(t, opts, rng, n, p, "", extra...)
}

// buildWorld is newWorldWith; if hide names a service, no registration
// declares an edge into it: those edges are w.late.
func buildWorld(t *testing.T, opts []servertest.Option, rng *rand.Rand, n int, p float64, hide string, extra ...string) *world {
	w := &world{
		t: t, ts: servertest.Start(t, "", opts...),
		succ: map[string][]string{}, inst: map[string]map[string]*simsidecar.Sidecar{},
		ran: map[string]map[string]map[string]bool{}, late: map[string][]string{},
	}
	for i := range n {
		w.svcs = append(w.svcs, fmt.Sprintf("s%d", i))
	}
	for i := range n {
		for j := i + 1; j < n; j++ {
			if j == i+1 || rng.Float64() < p {
				if w.svcs[j] == hide {
					w.late[w.svcs[i]] = append(w.late[w.svcs[i]], w.svcs[j])
					continue
				}
				w.succ[w.svcs[i]] = append(w.succ[w.svcs[i]], w.svcs[j])
			}
		}
	}
	for _, s := range w.svcs {
		w.add(s, "v1")
	}
	for _, sv := range extra {
		s, v, _ := strings.Cut(sv, "@")
		w.add(s, v)
	}
	return w
}

func (w *world) add(svc, version string) {
	sc, _ := w.ts.Register(&pb.Register{
		InstanceId: svc + "-" + version, Service: svc, Version: version, Address: "sim:" + svc + "-" + version,
		Dependencies: w.succ[svc], HeartbeatInterval: durationpb.New(time.Minute),
	})
	if w.inst[svc] == nil {
		w.inst[svc] = map[string]*simsidecar.Sidecar{}
	}
	w.inst[svc][version] = sc
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sc.WaitRouting(ctx, func(*pb.Routing) bool { return true }); err != nil {
		w.t.Fatalf("routing for %s@%s: %v", svc, version, err)
	}
}

func (w *world) record(txn, svc, version string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.ran[txn]
	if m == nil {
		m = map[string]map[string]bool{}
		w.ran[txn] = m
	}
	if m[svc] == nil {
		m[svc] = map[string]bool{}
	}
	m[svc][version] = true
}

// openPhase is the phase from which an update of strategy k decides the
// calls of transactions paused before it: CV's DRAINING, the others'
// WAITING.
func openPhase(k pb.Strategy) pb.Phase {
	if k == pb.Strategy_STRATEGY_CV {
		return pb.Phase_PHASE_DRAINING
	}
	return pb.Phase_PHASE_WAITING
}

// finishUnderLoad waits for the update id to finish while the load (stop,
// wait: from load) runs, and returns it with the load then running. WF may
// never find its services free under unbounded load (DESIGN §4): under WF
// the load pauses until the update has finished, then starts again from
// seed.
func (w *world) finishUnderLoad(ctx context.Context, t *testing.T, id string, k pb.Strategy, seed uint64, hints bool,
	stop chan struct{}, wait func() error) (*pb.Update, chan struct{}, func() error) {
	t.Helper()
	if k != pb.Strategy_STRATEGY_WF {
		return w.waitFinished(id, 30*time.Second), stop, wait
	}
	close(stop)
	if err := wait(); err != nil {
		t.Fatalf("load: %v", err)
	}
	u := w.waitFinished(id, 30*time.Second)
	stop = make(chan struct{})
	return u, stop, w.load(ctx, seed, 6, hints, stop)
}

// endLoadConsistent lets the load run 100 ms past the update's end, stops
// it (stop, wait: from load), and fails unless the update u ended DONE and
// no transaction ran on two versions of one service.
func (w *world) endLoadConsistent(t *testing.T, u *pb.Update, stop chan struct{}, wait func() error) {
	t.Helper()
	time.Sleep(100 * time.Millisecond) // traffic after the switch
	close(stop)
	if err := wait(); err != nil {
		t.Fatalf("load: %v", err)
	}
	if u.Phase != pb.Phase_PHASE_DONE {
		t.Fatalf("update ended %s (%s), want DONE", u.Phase, u.Reason)
	}
	if v := w.violations(); len(v) > 0 {
		t.Fatalf("%d version-inconsistent transactions (of %d), e.g. %v", len(v), w.txns.Load(), v[:min(5, len(v))])
	}
}

// violations returns the transactions that ran on two versions of one
// service (the oracle of DESIGN.md §1). It also fails the test if the
// coordinator rejected any event: the simulation sends only valid ones.
func (w *world) violations() []string {
	for svc, m := range w.inst {
		for v, sc := range m {
			if n, last := sc.Rejected(); n > 0 {
				w.t.Errorf("%s@%s: %d events rejected, last: %v", svc, v, n, last)
			}
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for txn, m := range w.ran {
		for svc, vs := range m {
			if len(vs) > 1 {
				out = append(out, fmt.Sprintf("%s on %s %v", txn, svc, vs))
			}
		}
	}
	slices.Sort(out)
	return out
}

// ranOn counts transactions that ran on svc@version (any version if "").
func (w *world) ranOn(svc, version string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, m := range w.ran {
		if version == "" && len(m[svc]) > 0 || m[svc][version] {
			n++
		}
	}
	return n
}

// plan is what one sub-transaction does: calls in order, each after a pause.
type plan struct {
	svc   string
	calls []call
}

type call struct {
	to     string
	pause  time.Duration
	gate   <-chan struct{} // if set, wait for it before calling
	child  *plan
	doneAt bool // send a Done hint for `to` after this call (its last call to `to`)
}

// randomPlan draws a plan of depth at most depth rooted at svc; calls to a
// successor may repeat, the shape that makes updates dangerous.
func (w *world) randomPlan(rng *rand.Rand, svc string, depth int, hints bool) *plan {
	p := &plan{svc: svc}
	succ := w.succ[svc]
	if w.useLate.Load() && len(w.late[svc]) > 0 {
		succ = append(slices.Clone(succ), w.late[svc]...)
	}
	if depth == 0 || len(succ) == 0 {
		return p
	}
	for range rng.IntN(4) {
		to := succ[rng.IntN(len(succ))]
		p.calls = append(p.calls, call{to: to, pause: time.Duration(rng.IntN(1500)) * time.Microsecond,
			child: w.randomPlan(rng, to, depth-1, hints)})
	}
	if hints {
		last := map[string]int{}
		for i, c := range p.calls {
			last[c.to] = i
		}
		for _, i := range last {
			if rng.IntN(2) == 0 {
				p.calls[i].doneAt = true
			}
		}
	}
	return p
}

// run executes a transaction with plan root at the entry's v1 instance.
func (w *world) run(ctx context.Context, txn string, root *plan) error {
	entry := w.inst[root.svc]["v1"]
	sub := w.subs.Add(1)
	if _, err := entry.SendAsync(simsidecar.Begin(txn, sub)); err != nil {
		return err
	}
	w.record(txn, root.svc, "v1")
	err := w.exec(ctx, txn, root, "v1", sub)
	if _, e := entry.SendAsync(simsidecar.End(txn)); err == nil {
		err = e
	}
	w.txns.Add(1)
	return err
}

func (w *world) exec(ctx context.Context, txn string, p *plan, version string, sub uint64) error {
	sc := w.inst[p.svc][version]
	for _, c := range p.calls {
		if c.gate != nil {
			select {
			case <-c.gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		time.Sleep(c.pause)
		child := w.subs.Add(1)
		v, err := sc.RouteCall(ctx, txn, sub, c.to, child)
		if err != nil {
			return fmt.Errorf("%s: call %s from %s@%s: %w", txn, c.to, p.svc, version, err)
		}
		if w.inst[c.to][v] == nil {
			return fmt.Errorf("%s: routed to %s@%s, which has no instance", txn, c.to, v)
		}
		w.calls.Add(1)
		w.record(txn, c.to, v)
		if err := w.exec(ctx, txn, c.child, v, child); err != nil {
			return err
		}
		evs := []*pb.Event{simsidecar.Return(txn, child)}
		if c.doneAt {
			evs = append(evs, simsidecar.Done(txn, sub, c.to))
		}
		if _, err := sc.SendAsync(evs...); err != nil {
			return err
		}
	}
	return nil
}

// load runs workers executing random transactions until stop closes.
func (w *world) load(ctx context.Context, seed uint64, workers int, hints bool, stop <-chan struct{}) (wait func() error) {
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	load := w.loads.Add(1) // transaction ids stay unique across loads
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				root := w.randomPlan(rng, w.svcs[0], 4, hints)
				if err := w.run(ctx, fmt.Sprintf("w%d.%d-%d", load, i, n), root); err != nil {
					errs <- err
					return
				}
				time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
			}
		}()
	}
	return func() error {
		wg.Wait()
		close(errs)
		return <-errs
	}
}

// startUpdate asks for an update over gRPC.
func (w *world) startUpdate(svc, to string, k pb.Strategy, timeout, maxBlock time.Duration) *pb.Update {
	w.t.Helper()
	u, err := w.ts.Admin.StartUpdate(context.Background(), &pb.StartUpdateRequest{
		Service: svc, ToVersion: to, Strategy: k,
		Timeout: durationpb.New(timeout), MaxBlock: durationpb.New(maxBlock),
	})
	if err != nil {
		w.t.Fatalf("start update of %s to %s: %v", svc, to, err)
	}
	return u
}

// waitFinished waits until the update is DONE, ABORTED or FAILED.
func (w *world) waitFinished(id string, within time.Duration) *pb.Update {
	w.t.Helper()
	var u *pb.Update
	servertest.Eventually(w.t, within, "update "+id+" to finish", func() bool {
		var err error
		u, err = w.ts.Admin.GetUpdate(context.Background(), &pb.GetUpdateRequest{Id: id})
		if err != nil {
			w.t.Fatal(err)
		}
		switch u.Phase {
		case pb.Phase_PHASE_DONE, pb.Phase_PHASE_FAILED:
			return true
		case pb.Phase_PHASE_ABORTED:
			return u.FinishedAt != nil && u.Progress == nil
		}
		return false
	})
	return u
}

// paused starts n transactions in which the entry s0 reaches svc (through
// the s0->s1->... path), then waits at gate, then reaches svc again. It
// returns once all have used svc; the returned func waits for their end.
func (w *world) paused(ctx context.Context, svc string, n int, gate <-chan struct{}) (wait func() error) {
	w.t.Helper()
	before := w.ranOn(svc, "")
	wait = w.startPaused(ctx, svc, n, gate)
	servertest.Eventually(w.t, 10*time.Second, "paused transactions to use "+svc, func() bool {
		return w.ranOn(svc, "") >= before+n
	})
	return wait
}

// startPaused is paused without waiting for the first use of svc.
func (w *world) startPaused(ctx context.Context, svc string, n int, gate <-chan struct{}) (wait func() error) {
	var path []string // s0 -> ... -> svc along s_i -> s_(i+1)
	for _, s := range w.svcs {
		path = append(path, s)
		if s == svc {
			break
		}
	}
	chain := func(g <-chan struct{}) call {
		var p *plan
		for i := len(path) - 1; i >= 1; i-- {
			next := &plan{svc: path[i]}
			if p != nil {
				next.calls = []call{{to: p.svc, child: p}}
			}
			p = next
		}
		return call{to: path[1], gate: g, child: p}
	}
	errs := make(chan error, n)
	for range n {
		root := &plan{svc: path[0], calls: []call{chain(nil), chain(gate)}}
		id := fmt.Sprintf("paused-%d", w.pausedN.Add(1))
		go func() { errs <- w.run(ctx, id, root) }()
	}
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

// waitPhase waits until the update has reached phase p (or finished).
func (w *world) waitPhase(id string, p pb.Phase) {
	w.t.Helper()
	servertest.Eventually(w.t, 30*time.Second, "update "+id+" to reach "+p.String(), func() bool {
		u, err := w.ts.Admin.GetUpdate(context.Background(), &pb.GetUpdateRequest{Id: id})
		if err != nil {
			w.t.Fatal(err)
		}
		for _, h := range u.History {
			if h.Phase == p {
				return true
			}
		}
		return u.FinishedAt != nil
	})
}

func servertest_send(t *testing.T, sc *simsidecar.Sidecar, evs ...*pb.Event) {
	t.Helper()
	servertest.Send(t, sc, evs...)
}

func servertest_eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	servertest.Eventually(t, 10*time.Second, what, cond)
}
