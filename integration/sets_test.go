package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Set updates (DESIGN.md §4.8): one update moves several services, and
// every transaction runs entirely on their old versions or entirely on
// their new ones.

// updateSet is a set update's members: service -> version to.
type updateSet map[string]string

// members lists the set for StartUpdateRequest, by service name.
func (s updateSet) members() []*pb.ServiceVersion {
	var out []*pb.ServiceVersion
	for _, svc := range slices.Sorted(func(yield func(string) bool) {
		for k := range s {
			if !yield(k) {
				return
			}
		}
	}) {
		out = append(out, &pb.ServiceVersion{Service: svc, Version: s[svc]})
	}
	return out
}

// startSetUpdate asks for an update of the set over gRPC, each member from
// v1.
func (w *world) startSetUpdate(set updateSet, k pb.Strategy, timeout, maxBlock time.Duration) *pb.Update {
	w.t.Helper()
	u, err := w.ts.Admin.StartUpdate(context.Background(), &pb.StartUpdateRequest{
		Members: set.members(), Strategy: k,
		Timeout: durationpb.New(timeout), MaxBlock: durationpb.New(maxBlock),
	})
	if err != nil {
		w.t.Fatalf("start update of %v: %v", set, err)
	}
	if len(u.Members) != len(set) {
		w.t.Fatalf("update %s has %d members, asked %d", u.Id, len(u.Members), len(set))
	}
	return u
}

// mixedSets returns the transactions that ran some services of the set
// (each updated from v1 to set[svc]) at v1 and some at their new version:
// the set oracle (DESIGN.md §4.8).
func (w *world) mixedSets(set updateSet) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for txn, m := range w.ran {
		var old, nu []string
		for svc, to := range set {
			if m[svc]["v1"] {
				old = append(old, svc+"@v1")
			}
			if m[svc][to] {
				nu = append(nu, svc+"@"+to)
			}
		}
		if len(old) > 0 && len(nu) > 0 {
			slices.Sort(old)
			slices.Sort(nu)
			out = append(out, fmt.Sprintf("%s on %v and %v", txn, old, nu))
		}
	}
	slices.Sort(out)
	return out
}

// fixedWorld is a world with the static graph succ over svcs (svcs[0] the
// entry), a v1 instance of each service and the extra ones.
func fixedWorld(t *testing.T, svcs []string, succ map[string][]string, extra ...string) *world {
	w := &world{
		t: t, ts: servertest.Start(t, ""), svcs: svcs,
		succ: succ, inst: map[string]map[string]*simsidecar.Sidecar{},
		ran: map[string]map[string]map[string]bool{}, late: map[string][]string{},
	}
	for _, s := range svcs {
		w.add(s, "v1")
	}
	for _, sv := range extra {
		s, v, _ := strings.Cut(sv, "@")
		w.add(s, v)
	}
	return w
}

// TestSetUpdateTransactionUsedOneMemberCallsAnother is the case set
// updates exist for: T used portal@v1 (and said it is done with portal),
// and calls proc only later. Each service alone is free; the set is not.
// WF and BF must not switch while T lives, and T's call to proc goes to
// proc@v1; CV switches at once, yet T's call to proc goes to v1, while a
// new transaction runs on both new versions, whichever it calls first.
// NAIVE switches the set at once, and T runs a mixed set: the oracle sees
// it.
func TestSetUpdateTransactionUsedOneMemberCallsAnother(t *testing.T) {
	for _, k := range []pb.Strategy{pb.Strategy_STRATEGY_WF, pb.Strategy_STRATEGY_BF, pb.Strategy_STRATEGY_CV, pb.Strategy_STRATEGY_NAIVE} {
		t.Run(strings.TrimPrefix(k.String(), "STRATEGY_"), func(t *testing.T) { checkUsedOneCallsAnother(t, k) })
	}
}

// portalProcWorld is a gateway that calls portal and proc, each with a v2
// registered, and the set of those v2s; call routes a call of txn (whose
// root sub-transaction is root) from the gateway to a service, records the
// version it ran on, returns from it and says which version that was.
func portalProcWorld(ctx context.Context, t *testing.T) (w *world, set updateSet, gw *simsidecar.Sidecar, call func(txn string, root uint64, to string) string) {
	t.Helper()
	w = fixedWorld(t, []string{"gateway", "portal", "proc"},
		map[string][]string{"gateway": {"portal", "proc"}}, "portal@v2", "proc@v2")
	gw = w.inst["gateway"]["v1"]
	call = func(txn string, root uint64, to string) string {
		t.Helper()
		sub := w.subs.Add(1)
		v, err := gw.RouteCall(ctx, txn, root, to, sub)
		if err != nil {
			t.Fatalf("%s calls %s: %v", txn, to, err)
		}
		w.record(txn, to, v)
		servertest.Send(t, gw, simsidecar.Return(txn, sub))
		return v
	}
	return w, updateSet{"portal": "v2", "proc": "v2"}, gw, call
}

func checkUsedOneCallsAnother(t *testing.T, k pb.Strategy) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, set, gw, call := portalProcWorld(ctx, t)

	// T used portal@v1 and is done with it; it may still call proc.
	root := w.subs.Add(1)
	servertest.Send(t, gw, simsidecar.Begin("T", root))
	w.record("T", "gateway", "v1")
	if v := call("T", root, "portal"); v != "v1" {
		t.Fatalf("T routed to portal@%s before the update", v)
	}
	servertest.Send(t, gw, simsidecar.Done("T", root, "portal"))

	u := w.startSetUpdate(set, k, time.Minute, time.Minute)
	switch k {
	case pb.Strategy_STRATEGY_WF, pb.Strategy_STRATEGY_BF:
		// T keeps the set from being free, though each service alone is.
		servertest.Eventually(t, 10*time.Second, "the update to wait for the set, blocked by T", func() bool {
			g := w.getUpdate(u.Id)
			return g.Phase == pb.Phase_PHASE_WAITING && g.Progress.GetBlocking() == 1 &&
				strings.Contains(g.Progress.GetWaitingFor(), "portal+proc to be free (1 transaction blocks it)")
		})
		for _, svc := range []string{"portal", "proc"} {
			f, err := w.ts.Admin.GetFreeness(ctx, &pb.GetFreenessRequest{Service: svc})
			if err != nil || !f.Free {
				t.Fatalf("%s alone should be free: %v %v", svc, f, err)
			}
		}
	case pb.Strategy_STRATEGY_CV:
		w.waitPhase(u.Id, pb.Phase_PHASE_DRAINING)
		if g := w.getUpdate(u.Id); g.Phase != pb.Phase_PHASE_DRAINING || g.Progress.GetOldTransactions() != 1 {
			t.Fatalf("CV: %s with %d old transactions, want DRAINING with T", g.Phase, g.Progress.GetOldTransactions())
		}
		// A new transaction runs on the new versions, proc first.
		r := w.subs.Add(1)
		servertest.Send(t, gw, simsidecar.Begin("U", r))
		w.record("U", "gateway", "v1")
		if v := call("U", r, "proc"); v != "v2" {
			t.Errorf("CV: a new transaction's first call to the set went to proc@%s", v)
		}
		if v := call("U", r, "portal"); v != "v2" {
			t.Errorf("CV: a transaction that used proc@v2 was routed to portal@%s", v)
		}
		servertest.Send(t, gw, simsidecar.End("U"))
	case pb.Strategy_STRATEGY_NAIVE:
		if u = w.waitFinished(u.Id, 10*time.Second); u.Phase != pb.Phase_PHASE_DONE {
			t.Fatalf("NAIVE ended %s", u.Phase)
		}
		if err := gw.WaitRouting(ctx, func(*pb.Routing) bool { return gw.Route("proc").GetDefaultVersion() == "v2" }); err != nil {
			t.Fatal(err)
		}
	}

	// T calls proc now.
	got := call("T", root, "proc")
	servertest.Send(t, gw, simsidecar.End("T"))
	if k == pb.Strategy_STRATEGY_NAIVE {
		if got != "v2" || len(w.mixedSets(set)) != 1 {
			t.Fatalf("NAIVE: T routed to proc@%s, mixed sets %v: want proc@v2 and T mixed", got, w.mixedSets(set))
		}
		if v := w.violations(); len(v) != 0 {
			t.Fatalf("NAIVE: per-service violations %v: T ran each service on one version", v)
		}
		return
	}
	if got != "v1" {
		t.Fatalf("T used portal@v1, then was routed to proc@%s", got)
	}
	if u = w.waitFinished(u.Id, 30*time.Second); u.Phase != pb.Phase_PHASE_DONE {
		t.Fatalf("update ended %s (%s), want DONE", u.Phase, u.Reason)
	}
	// After the update every transaction runs on the new versions.
	r := w.subs.Add(1)
	servertest.Send(t, gw, simsidecar.Begin("V", r))
	w.record("V", "gateway", "v1")
	for _, svc := range []string{"portal", "proc"} {
		if v := call("V", r, svc); v != "v2" {
			t.Errorf("after the update, %s@%s", svc, v)
		}
	}
	servertest.Send(t, gw, simsidecar.End("V"))
	if m := w.mixedSets(set); len(m) > 0 {
		t.Fatalf("mixed sets: %v", m)
	}
	if v := w.violations(); len(v) > 0 {
		t.Fatalf("violations: %v", v)
	}
	t.Logf("history %v", phases(u))
}

// TestSetUpdateRefusals: a set naming a service twice, naming a service or
// version that does not exist, or a service another update is moving, is
// refused with a status that says why, and starts nothing.
func TestSetUpdateRefusals(t *testing.T) {
	w := fixedWorld(t, []string{"gateway", "portal", "proc"},
		map[string][]string{"gateway": {"portal", "proc"}}, "portal@v2", "proc@v2")
	ctx := context.Background()
	start := func(req *pb.StartUpdateRequest) error {
		req.Strategy = pb.Strategy_STRATEGY_CV
		_, err := w.ts.Admin.StartUpdate(ctx, req)
		return err
	}
	sv := func(s, v string) *pb.ServiceVersion { return &pb.ServiceVersion{Service: s, Version: v} }
	for _, tc := range []struct {
		name string
		req  *pb.StartUpdateRequest
		code codes.Code
		msg  string
	}{
		{"duplicate", &pb.StartUpdateRequest{Members: []*pb.ServiceVersion{sv("portal", "v2"), sv("portal", "v2")}},
			codes.InvalidArgument, `service "portal" is twice in members`},
		{"both forms", &pb.StartUpdateRequest{Service: "portal", ToVersion: "v2", Members: []*pb.ServiceVersion{sv("proc", "v2")}},
			codes.InvalidArgument, "either service and to_version, or members"},
		{"service not a member", &pb.StartUpdateRequest{Service: "gateway", Members: []*pb.ServiceVersion{sv("portal", "v2"), sv("proc", "v2")}},
			codes.InvalidArgument, `service "gateway" is not one of members`},
		{"unknown service", &pb.StartUpdateRequest{Members: []*pb.ServiceVersion{sv("portal", "v2"), sv("nope", "v2")}},
			codes.NotFound, `unknown service "nope"`},
		{"unknown version", &pb.StartUpdateRequest{Members: []*pb.ServiceVersion{sv("portal", "v2"), sv("proc", "v9")}},
			codes.FailedPrecondition, "proc@v9"},
		{"empty version", &pb.StartUpdateRequest{Members: []*pb.ServiceVersion{sv("portal", "v2"), sv("proc", "")}},
			codes.InvalidArgument, "members[1].version"},
	} {
		err := start(tc.req)
		if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
			t.Errorf("%s: %v, want %v containing %q", tc.name, err, tc.code, tc.msg)
		}
	}
	if _, err := w.ts.Admin.DryRunUpdate(ctx, &pb.StartUpdateRequest{Members: []*pb.ServiceVersion{sv("portal", "v2")},
		Strategy: pb.Strategy_STRATEGY_CV}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "not members") {
		t.Errorf("dry run of a set: %v, want InvalidArgument", err)
	}
	l, err := w.ts.Admin.ListUpdates(ctx, &pb.ListUpdatesRequest{})
	if err != nil || len(l.Updates) != 0 {
		t.Fatalf("refused requests started updates: %v %v", l, err)
	}
	// proc is being moved by one update: a set naming it is refused.
	u := w.startUpdate("proc", "v2", pb.Strategy_STRATEGY_CV, 0, 0)
	err = start(&pb.StartUpdateRequest{Members: []*pb.ServiceVersion{sv("portal", "v2"), sv("proc", "v2")}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), u.Id) {
		t.Fatalf("set naming a service mid-update: %v, want FailedPrecondition naming %s", err, u.Id)
	}
	w.waitFinished(u.Id, 30*time.Second)
	// A set mid-update (WF, held WAITING by T running at portal) refuses
	// an update of one of its members; aborted, it ends ABORTED as one.
	gw := w.inst["gateway"]["v1"]
	root, sub := w.subs.Add(1), w.subs.Add(1)
	servertest.Send(t, gw, simsidecar.Begin("T", root))
	if _, err := gw.RouteCall(ctx, "T", root, "portal", sub); err != nil {
		t.Fatal(err)
	}
	s := w.startSetUpdate(updateSet{"portal": "v2", "proc": "v1"}, pb.Strategy_STRATEGY_WF, time.Minute, 0)
	w.waitPhase(s.Id, pb.Phase_PHASE_WAITING)
	_, err = w.ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "portal", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), s.Id) {
		t.Fatalf("update of a member of a set mid-update: %v, want FailedPrecondition naming %s", err, s.Id)
	}
	a, err := w.ts.Admin.AbortUpdate(ctx, &pb.AbortUpdateRequest{Id: s.Id, Reason: "test"})
	if err != nil || a.Phase != pb.Phase_PHASE_ABORTED {
		t.Fatalf("abort of the set: %v %v", a, err)
	}
	// Both members are free to update again.
	w.startUpdate("proc", "v1", pb.Strategy_STRATEGY_CV, 0, 0)
	servertest.Send(t, gw, simsidecar.Return("T", sub), simsidecar.End("T"))
}

// TestSetUpdatesKeepConsistency runs random transactions over a random
// graph and updates a set of two services under load with WF, BF and CV:
// no transaction runs on two versions of a service or on a mixed set, and
// the update finishes. Besides the load, transactions that used the first
// member and call the second only once the update has started.
func TestSetUpdatesKeepConsistency(t *testing.T) {
	for _, k := range []pb.Strategy{pb.Strategy_STRATEGY_WF, pb.Strategy_STRATEGY_BF, pb.Strategy_STRATEGY_CV} {
		for _, hints := range []bool{false, true} {
			t.Run(consistencyName(k, hints), func(t *testing.T) { checkSetConsistency(t, k, hints) })
		}
	}
}

// crossPaused starts n transactions in which the entry reaches a (through
// the s0->s1->... path), then waits at gate, then reaches b; it returns
// once all have used a.
func (w *world) crossPaused(ctx context.Context, a, b string, n int, gate <-chan struct{}) (wait func() error) {
	w.t.Helper()
	chain := func(svc string, g <-chan struct{}) call {
		var path []string
		for _, s := range w.svcs {
			path = append(path, s)
			if s == svc {
				break
			}
		}
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
	before := w.ranOn(a, "")
	errs := make(chan error, n)
	for range n {
		root := &plan{svc: w.svcs[0], calls: []call{chain(a, nil), chain(b, gate)}}
		id := fmt.Sprintf("cross-%d", w.pausedN.Add(1))
		go func() { errs <- w.run(ctx, id, root) }()
	}
	servertest.Eventually(w.t, 10*time.Second, "paused transactions to use "+a, func() bool {
		return w.ranOn(a, "") >= before+n
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

func checkSetConsistency(t *testing.T, k pb.Strategy, hints bool) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	w := newWorld(t, rng, 6, 0.4, "s2@v2", "s4@v2")
	set := updateSet{"s2": "v2", "s4": "v2"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stop := make(chan struct{})
	wait := w.load(ctx, seed, 6, hints, stop)
	paused := make(chan struct{})
	pausedDone := w.crossPaused(ctx, "s2", "s4", 3, paused)
	time.Sleep(time.Duration(50+rng.IntN(200)) * time.Millisecond)
	u := w.startSetUpdate(set, k, 20*time.Second, 10*time.Second)
	w.waitPhase(u.Id, openPhase(k))
	close(paused)
	if err := pausedDone(); err != nil {
		t.Fatal(err)
	}
	u, stop, wait = w.finishUnderLoad(ctx, t, u.Id, k, seed+1, hints, stop, wait)
	w.endLoadConsistent(t, u, stop, wait)
	if m := w.mixedSets(set); len(m) > 0 {
		t.Fatalf("%d transactions ran a mixed set (of %d), e.g. %v", len(m), w.txns.Load(), m[:min(5, len(m))])
	}
	if w.ranOn("s2", "v2") == 0 || w.ranOn("s4", "v2") == 0 {
		t.Fatalf("no transaction ran on the new set after the update: s2@v2 %d, s4@v2 %d", w.ranOn("s2", "v2"), w.ranOn("s4", "v2"))
	}
	t.Logf("%d transactions, %d calls; s2@v2 %d, s4@v2 %d; history %v", w.txns.Load(), w.calls.Load(),
		w.ranOn("s2", "v2"), w.ranOn("s4", "v2"), phases(u))
}

// TestNaiveSetUpdateMixesSets proves the set oracle sees violations: the
// transactions that used s2@v1 and call s4 after a NAIVE set switch run a
// mixed set.
func TestNaiveSetUpdateMixesSets(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	w := newWorld(t, rng, 6, 0.4, "s2@v2", "s4@v2")
	set := updateSet{"s2": "v2", "s4": "v2"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stop := make(chan struct{})
	wait := w.load(ctx, seed, 4, false, stop)
	gate := make(chan struct{})
	paused := w.crossPaused(ctx, "s2", "s4", 3, gate)
	u := w.startSetUpdate(set, pb.Strategy_STRATEGY_NAIVE, 0, 0)
	if u = w.waitFinished(u.Id, 10*time.Second); u.Phase != pb.Phase_PHASE_DONE {
		t.Fatalf("NAIVE set update ended %s, want DONE", u.Phase)
	}
	for _, svc := range []string{"s2", "s4"} {
		w.waitDefault(svc, "v2")
	}
	close(gate)
	if err := paused(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	m := w.mixedSets(set)
	if len(m) < 3 {
		t.Fatalf("NAIVE set: %d mixed sets %v, want at least the 3 paused transactions", len(m), m)
	}
	t.Logf("NAIVE set: %d mixed sets, %d per-service violations, of %d transactions", len(m), len(w.violations()), w.txns.Load())
}

// TestSetUpdateREST: POST /v1/services/{service}/updates with members (the
// path naming one of them) starts one update of the set; GET lists it under
// each member's name; GET by id has every member.
func TestSetUpdateREST(t *testing.T) {
	w := fixedWorld(t, []string{"gateway", "portal", "proc"},
		map[string][]string{"gateway": {"portal", "proc"}}, "portal@v2", "proc@v2")
	resp, err := http.Post("http://"+w.ts.HTTPAddr()+"/v1/services/portal/updates", "application/json", bytes.NewBufferString(
		`{"members":[{"service":"portal","version":"v2"},{"service":"proc","version":"v2"}],"strategy":"STRATEGY_WF"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var u pb.Update
	if resp.StatusCode != http.StatusOK || protojson.Unmarshal(body, &u) != nil {
		t.Fatalf("POST a set: HTTP %d %s", resp.StatusCode, body)
	}
	w.waitFinished(u.Id, 30*time.Second)
	var got pb.Update
	if code := w.ts.REST("/v1/updates/"+u.Id, &got); code != http.StatusOK || got.Phase != pb.Phase_PHASE_DONE ||
		len(got.Members) != 2 || got.Members[1].Service != "proc" || got.Members[1].FromVersion != "v1" || got.Members[1].ToVersion != "v2" {
		t.Fatalf("GET update: HTTP %d %v, want DONE with both members", code, &got)
	}
	for _, svc := range []string{"portal", "proc"} {
		var list pb.ListUpdatesResponse
		if code := w.ts.REST("/v1/updates?service="+svc, &list); code != http.StatusOK || len(list.Updates) != 1 || list.Updates[0].Id != u.Id {
			t.Fatalf("GET updates of %s: HTTP %d %v", svc, code, list.Updates)
		}
	}
	resp, err = http.Post("http://"+w.ts.HTTPAddr()+"/v1/services/portal/updates", "application/json", bytes.NewBufferString(
		`{"members":[{"service":"portal","version":"v1"},{"service":"portal","version":"v1"}],"strategy":"STRATEGY_WF"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "twice in members") {
		t.Fatalf("POST a set naming portal twice: HTTP %d %s, want 400", resp.StatusCode, body)
	}
}

// TestSetCVAbortAfterSwitchRollsBackTheSet: a CV set update aborted after
// its switch rolls the whole set back. O used portal@v1 before the update
// and keeps it draining; U used portal@v2 (the new side) and
// is done with portal; it may still call proc. After the abort, new
// transactions run on both old versions, U's call to proc goes to proc@v2
// (its side), and the rollback lasts until U ends: the new side is in use
// while a transaction on it may call any member.
func TestSetCVAbortAfterSwitchRollsBackTheSet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, set, gw, call := portalProcWorld(ctx, t)
	// O used portal@v1 and may call proc: the old side cannot drain.
	rootO := w.subs.Add(1)
	servertest.Send(t, gw, simsidecar.Begin("O", rootO))
	w.record("O", "gateway", "v1")
	call("O", rootO, "portal")
	servertest.Send(t, gw, simsidecar.Done("O", rootO, "portal"))
	u := w.startSetUpdate(set, pb.Strategy_STRATEGY_CV, 0, 0)
	w.waitPhase(u.Id, pb.Phase_PHASE_DRAINING)
	rootU := w.subs.Add(1)
	servertest.Send(t, gw, simsidecar.Begin("U", rootU))
	w.record("U", "gateway", "v1")
	if v := call("U", rootU, "portal"); v != "v2" {
		t.Fatalf("U, begun after the switch, routed to portal@%s", v)
	}
	servertest.Send(t, gw, simsidecar.Done("U", rootU, "portal"))
	if _, err := w.ts.Admin.AbortUpdate(ctx, &pb.AbortUpdateRequest{Id: u.Id, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if r := w.getUpdate(u.Id); r.Phase != pb.Phase_PHASE_ABORTED || r.Progress.GetOldTransactions() != 1 {
		t.Fatalf("after abort: %s progress %v, want ABORTED rolling back with U on the new side", r.Phase, r.Progress)
	}
	root := w.subs.Add(1)
	servertest.Send(t, gw, simsidecar.Begin("N", root))
	w.record("N", "gateway", "v1")
	for _, svc := range []string{"proc", "portal"} {
		if v := call("N", root, svc); v != "v1" {
			t.Errorf("a new transaction after the abort routed to %s@%s", svc, v)
		}
	}
	servertest.Send(t, gw, simsidecar.End("N"))
	if r := w.getUpdate(u.Id); r.Progress == nil {
		t.Fatalf("the rollback ended while U, on the new side, may still call proc: %v", r)
	}
	if v := call("O", rootO, "proc"); v != "v1" {
		t.Fatalf("O used portal@v1, then after the abort was routed to proc@%s", v)
	}
	servertest.Send(t, gw, simsidecar.End("O"))
	if v := call("U", rootU, "proc"); v != "v2" {
		t.Fatalf("U used portal@v2, then after the abort was routed to proc@%s", v)
	}
	servertest.Send(t, gw, simsidecar.End("U"))
	if u = w.waitFinished(u.Id, 10*time.Second); u.Phase != pb.Phase_PHASE_ABORTED {
		t.Fatalf("update = %s, want ABORTED", u.Phase)
	}
	if m, v := w.mixedSets(set), w.violations(); len(m)+len(v) > 0 {
		t.Fatalf("mixed sets %v, violations %v", m, v)
	}
	for _, svc := range []string{"portal", "proc"} {
		if err := gw.WaitRouting(ctx, func(*pb.Routing) bool {
			r := gw.Route(svc)
			return !r.UpdateMode && r.DefaultVersion == "v1"
		}); err != nil {
			t.Fatalf("route of %s after the rollback = %v: %v", svc, gw.Route(svc), err)
		}
	}
}

// TestSetCanaryKeepsConsistency is TestCanaryKeepsVersionConsistency for a
// canary of the set {s2, s4} (DESIGN.md §4.7, §4.8): a transaction's first
// use of either member assigns it the whole set, by the step's weight,
// counted once; transactions that used s2 before the canary or in a step
// call s4 later; no transaction runs two versions of a service or a mixed
// set, and each step's served weight is exact.
func TestSetCanaryKeepsConsistency(t *testing.T) {
	for _, hints := range []bool{false, true} {
		t.Run(consistencyName(pb.Strategy_STRATEGY_CV, hints), func(t *testing.T) {
			checkCanaryConsistency(t, hints, updateSet{"s2": "v2", "s4": "v2"})
		})
	}
}

// TestSetCanaryAssignsTheWholeSet: in a canary step of the set {portal,
// proc} at 50%, a transaction's first call to either member assigns it
// the whole set (its call to the other member goes to the same side), and
// it is counted once: eight transactions, half of them calling proc first,
// are four on each side, and the step counts eight.
func TestSetCanaryAssignsTheWholeSet(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, set, gw, call := portalProcWorld(ctx, t)
	u, err := w.ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Members: set.members(), Strategy: pb.Strategy_STRATEGY_CV,
		CanarySteps: []uint32{50, 100}})
	if err != nil {
		t.Fatal(err)
	}
	w.waitPhase(u.Id, pb.Phase_PHASE_CANARY)
	onNew := 0
	for i := range 8 {
		txn := fmt.Sprintf("T%d", i)
		root := w.subs.Add(1)
		servertest.Send(t, gw, simsidecar.Begin(txn, root))
		w.record(txn, "gateway", "v1")
		first, second := "portal", "proc"
		if i%2 == 1 {
			first, second = second, first
		}
		v := call(txn, root, first)
		if again := call(txn, root, second); again != v {
			t.Fatalf("%s: %s@%s, then %s@%s", txn, first, v, second, again)
		}
		if v == "v2" {
			onNew++
		}
		servertest.Send(t, gw, simsidecar.End(txn))
	}
	g := w.getUpdate(u.Id)
	st := g.Canary.StepsServed[0]
	if onNew != 4 || st.NewTransactions != 4 || st.OldTransactions != 4 {
		t.Fatalf("%d of 8 transactions on the new side; step counts %d new, %d old: want 4 and 4 (each counted once)", onNew, st.NewTransactions, st.OldTransactions)
	}
	if want := "canary step 1 of 2 (50% of new transactions to portal@v2+proc@v2)"; !strings.Contains(g.Progress.GetWaitingFor(), want) {
		t.Errorf("waiting_for %q, want it to say %q", g.Progress.GetWaitingFor(), want)
	}
	if p, err := w.ts.Admin.PromoteUpdate(ctx, &pb.PromoteUpdateRequest{Id: u.Id}); err != nil || p.Phase != pb.Phase_PHASE_DRAINING {
		t.Fatalf("promote to the switch: %v %v", p.GetPhase(), err)
	}
	if u = w.waitFinished(u.Id, 30*time.Second); u.Phase != pb.Phase_PHASE_DONE {
		t.Fatalf("update ended %s (%s)", u.Phase, u.Reason)
	}
	if m := w.mixedSets(set); len(m) > 0 {
		t.Fatalf("mixed sets: %v", m)
	}
	if v := w.violations(); len(v) > 0 {
		t.Fatalf("violations: %v", v)
	}
}
