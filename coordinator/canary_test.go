package coordinator_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// canaryWorld is a caller a of s, with s@v1 and s@v2, on a memory store.
type canaryWorld struct {
	t     *testing.T
	m     *memServer
	a     *simsidecar.Sidecar
	n     int
	admin pb.AdminServiceClient
}

func newCanaryWorld(t *testing.T) *canaryWorld {
	m := startMem(t)
	w := &canaryWorld{t: t, m: m, a: m.Sidecar("a-1", "a", "v1", "s"), admin: m.Admin}
	keepAlive(t, w.a)
	keepAlive(t, m.Sidecar("s-1", "s", "v1"))
	keepAlive(t, m.Sidecar("s-2", "s", "v2"))
	return w
}

// call makes txn (begun, root sub 1) call s with sub; returns the version.
func (w *canaryWorld) call(txn string, sub uint64) string {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := w.a.RouteCall(ctx, txn, 1, "s", sub)
	if err != nil {
		w.t.Fatalf("%s calls s: %v", txn, err)
	}
	return v
}

// txns begins n transactions that each call s once (and return) and
// returns their ids and versions; they stay live.
func (w *canaryWorld) txns(n int) (ids []string, vers map[string]string) {
	w.t.Helper()
	vers = map[string]string{}
	for range n {
		w.n++
		id := fmt.Sprintf("T%d", w.n)
		w.m.send(w.a, simsidecar.Begin(id, 1))
		vers[id] = w.call(id, 2)
		w.m.send(w.a, simsidecar.Return(id, 2))
		ids = append(ids, id)
	}
	return ids, vers
}

func (m *memServer) send(sc *simsidecar.Sidecar, evs ...*pb.Event) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := sc.Send(ctx, evs...)
	if err != nil || len(ack.GetErrors()) > 0 {
		m.t.Fatalf("send: %v %v", ack.GetErrors(), err)
	}
}

func (w *canaryWorld) get(id string) *pb.Update {
	w.t.Helper()
	u, err := w.admin.GetUpdate(context.Background(), &pb.GetUpdateRequest{Id: id})
	if err != nil {
		w.t.Fatal(err)
	}
	return u
}

func (w *canaryWorld) waitPhase(id string, p pb.Phase) *pb.Update {
	w.t.Helper()
	var u *pb.Update
	deadline := time.Now().Add(10 * time.Second)
	for u = w.get(id); u.Phase != p; u = w.get(id) {
		if time.Now().After(deadline) {
			w.t.Fatalf("update %s is %s (%s), want %s", id, u.Phase, u.Reason, p)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return u
}

func countOn(vers map[string]string, v string) int {
	n := 0
	for _, x := range vers {
		if x == v {
			n++
		}
	}
	return n
}

// A manual canary assigns exactly the step's weight of the transactions
// new to the service, keeps each where it was assigned, moves by promote
// (pause and resume in between), and switches at its last step.
func TestCanaryWeightsPinsAndPromote(t *testing.T) {
	w := newCanaryWorld(t)
	ctx := context.Background()
	u, err := w.admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "s", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV,
		CanarySteps: []uint32{20, 50, 100}})
	if err != nil {
		t.Fatal(err)
	}
	w.waitPhase(u.Id, pb.Phase_PHASE_CANARY)
	ids, vers := w.txns(100)
	if n := countOn(vers, "v2"); n != 20 {
		t.Fatalf("step 1 (20%%): %d of 100 new transactions on v2", n)
	}
	// Stickiness: each transaction's next call goes where its first went.
	for i, id := range ids {
		if v := w.call(id, uint64(10+i)); v != vers[id] {
			t.Fatalf("%s used s@%s, then was sent to s@%s", id, vers[id], v)
		}
	}
	g := w.get(u.Id)
	if st := g.Canary.StepsServed; len(st) != 1 || st[0].Percent != 20 || st[0].OldTransactions != 80 || st[0].NewTransactions != 20 {
		t.Fatalf("served: %v, want one step of 20%%: 80 old, 20 new", st)
	}
	if !strings.Contains(g.Progress.WaitingFor, "manual") {
		t.Errorf("waiting_for %q, want it to say the canary is manual", g.Progress.WaitingFor)
	}

	if _, err := w.admin.ResumeUpdate(ctx, &pb.ResumeUpdateRequest{Id: u.Id}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("resume of a canary not paused: %v, want FailedPrecondition", err)
	}
	p, err := w.admin.PauseUpdate(ctx, &pb.PauseUpdateRequest{Id: u.Id})
	if err != nil || !p.Canary.Paused {
		t.Fatalf("pause: %v %v", p.GetCanary(), err)
	}
	if _, err := w.admin.PauseUpdate(ctx, &pb.PauseUpdateRequest{Id: u.Id}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("pause of a paused canary: %v, want FailedPrecondition", err)
	}
	if r, err := w.admin.ResumeUpdate(ctx, &pb.ResumeUpdateRequest{Id: u.Id}); err != nil || r.Canary.Paused {
		t.Fatalf("resume: %v %v", r.GetCanary(), err)
	}
	pr, err := w.admin.PromoteUpdate(ctx, &pb.PromoteUpdateRequest{Id: u.Id})
	if err != nil || pr.Phase != pb.Phase_PHASE_CANARY || pr.Canary.Step != 1 {
		t.Fatalf("promote: %v %v %v, want CANARY at step 2", pr.GetPhase(), pr.GetCanary(), err)
	}
	_, vers2 := w.txns(10)
	if n := countOn(vers2, "v2"); n != 5 {
		t.Fatalf("step 2 (50%%): %d of 10 new transactions on v2", n)
	}
	for i, id := range ids[:30] { // assigned at 20%: still where they were
		if v := w.call(id, uint64(200+i)); v != vers[id] {
			t.Fatalf("after the promote %s used s@%s, then was sent to s@%s", id, vers[id], v)
		}
	}
	pr, err = w.admin.PromoteUpdate(ctx, &pb.PromoteUpdateRequest{Id: u.Id})
	if err != nil || pr.Phase != pb.Phase_PHASE_DRAINING || pr.SwitchedAt == nil {
		t.Fatalf("promote to 100: %v %v, want the switch (DRAINING)", pr.GetPhase(), err)
	}
	_, vers3 := w.txns(5)
	if n := countOn(vers3, "v2"); n != 5 {
		t.Fatalf("after the switch: %d of 5 new transactions on v2", n)
	}
	if v := w.call(ids[0], 999); v != vers[ids[0]] {
		t.Fatalf("after the switch %s used s@%s, then was sent to s@%s", ids[0], vers[ids[0]], v)
	}
	if _, err := w.admin.PromoteUpdate(ctx, &pb.PromoteUpdateRequest{Id: u.Id}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("promote while DRAINING: %v, want FailedPrecondition", err)
	}
	var ends []*pb.Event
	for i := 1; i <= w.n; i++ {
		ends = append(ends, simsidecar.End(fmt.Sprintf("T%d", i)))
	}
	w.m.send(w.a, ends...)
	d := w.waitPhase(u.Id, pb.Phase_PHASE_DONE)
	st := d.Canary.StepsServed
	if len(st) != 3 || st[1].OldTransactions != 5 || st[1].NewTransactions != 5 || st[2].Percent != 100 || st[2].NewTransactions != 5 || st[2].OldTransactions != 0 {
		t.Fatalf("served per step: %v", st)
	}
	t.Logf("history %v", d.History)
}

// Aborting a canary step rolls back: new transactions go to the old
// version, those assigned the new one finish there, and the update ends
// ABORTED once none is left.
func TestCanaryAbortRollsBack(t *testing.T) {
	w := newCanaryWorld(t)
	ctx := context.Background()
	u, err := w.admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "s", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV,
		CanarySteps: []uint32{50, 100}})
	if err != nil {
		t.Fatal(err)
	}
	w.waitPhase(u.Id, pb.Phase_PHASE_CANARY)
	ids, vers := w.txns(4)
	a, err := w.admin.AbortUpdate(ctx, &pb.AbortUpdateRequest{Id: u.Id, Reason: "v2 looks wrong"})
	if err != nil || a.Phase != pb.Phase_PHASE_ABORTED || !a.RollingBack {
		t.Fatalf("abort: %v rolling_back=%v %v", a.GetPhase(), a.GetRollingBack(), err)
	}
	_, fresh := w.txns(6)
	if n := countOn(fresh, "v2"); n != 0 {
		t.Fatalf("after the abort %d of 6 new transactions on v2", n)
	}
	for i, id := range ids {
		if v := w.call(id, uint64(50+i)); v != vers[id] {
			t.Fatalf("rolling back, %s used s@%s, then was sent to s@%s", id, vers[id], v)
		}
	}
	if g := w.get(u.Id); g.FinishedAt != nil && g.Progress == nil {
		t.Fatal("rollback over while transactions assigned v2 live")
	}
	var ends []*pb.Event
	for i := 1; i <= w.n; i++ {
		ends = append(ends, simsidecar.End(fmt.Sprintf("T%d", i)))
	}
	w.m.send(w.a, ends...)
	deadline := time.Now().Add(10 * time.Second)
	for g := w.get(u.Id); g.Progress != nil; g = w.get(u.Id) {
		if time.Now().After(deadline) {
			t.Fatalf("rollback did not end: %v", g.Progress.WaitingFor)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if g := w.get(u.Id); g.Phase != pb.Phase_PHASE_ABORTED || g.Reason != "v2 looks wrong" {
		t.Fatalf("ended %v (%q)", g.Phase, g.Reason)
	}
}

// The analysis aborts a canary whose new version fails more than the
// old one by --max-error-rate, or is slower at p99 by more than --max-p99,
// saying why; a new version as good as the old one is not aborted.
func TestCanaryAnalysisAborts(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failEvery int           // of v2's calls; 0: none fail
		slow      time.Duration // v2's latency (v1's is 1ms)
		aborted   string        // the reason's start; "": not aborted
	}{{"failing", 5, time.Millisecond, "analysis: error rate"}, {"slow", 0, 50 * time.Millisecond, "analysis: p99 latency"},
		{"healthy", 0, time.Millisecond, ""}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newCanaryWorld(t)
			ctx := context.Background()
			u, err := w.admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "s", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV,
				CanarySteps: []uint32{50, 100}, MaxErrorRate: 0.05, MaxP99: durationpb.New(10 * time.Millisecond),
				AnalysisWindow: durationpb.New(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			w.waitPhase(u.Id, pb.Phase_PHASE_CANARY)
			newCalls := 0
			for i := range 100 {
				id := fmt.Sprintf("A%d", i)
				w.m.send(w.a, simsidecar.Begin(id, 1))
				v := w.call(id, 2)
				out := &pb.CallOutcome{Class: pb.OutcomeClass_OUTCOME_CLASS_OK, Code: 200, Latency: durationpb.New(time.Millisecond)}
				if v == "v2" {
					newCalls++
					out.Latency = durationpb.New(tc.slow)
					if tc.failEvery > 0 && newCalls%tc.failEvery == 0 {
						out.Class, out.Code = pb.OutcomeClass_OUTCOME_CLASS_SERVER_ERROR, 503
					}
				}
				ret := simsidecar.Return(id, 2)
				ret.Outcome = out
				w.m.send(w.a, ret, simsidecar.End(id))
			}
			g := w.get(u.Id)
			an := g.GetProgress().GetCanaryAnalysis()
			if tc.aborted == "" {
				if g.Phase != pb.Phase_PHASE_CANARY || an.GetNewVersion().GetCalls() != 50 || an.GetOldVersion().GetCalls() != 50 || an.GetNewVersion().GetErrors() != 0 {
					t.Fatalf("healthy: %v (%s), analysis %v", g.Phase, g.Reason, an)
				}
				return
			}
			g = w.waitPhase(u.Id, pb.Phase_PHASE_ABORTED)
			if !strings.HasPrefix(g.Reason, tc.aborted) {
				t.Fatalf("aborted with reason %q", g.Reason)
			}
			if h := g.History[len(g.History)-1]; h.Phase != pb.Phase_PHASE_ABORTED || h.Reason != g.Reason {
				t.Fatalf("history's last entry %v", h)
			}
		})
	}
}

// Bad canary requests are refused with InvalidArgument, naming what is
// wrong; a promote of an update that is no canary is FailedPrecondition.
func TestCanaryRequestsChecked(t *testing.T) {
	w := newCanaryWorld(t)
	ctx := context.Background()
	for _, tc := range []struct {
		req  *pb.StartUpdateRequest
		want string
	}{
		{&pb.StartUpdateRequest{Strategy: pb.Strategy_STRATEGY_BF, CanarySteps: []uint32{5, 100}}, "a canary is a cv update"},
		{&pb.StartUpdateRequest{Strategy: pb.Strategy_STRATEGY_CV, CanarySteps: []uint32{5, 50}}, "must be 100"},
		{&pb.StartUpdateRequest{Strategy: pb.Strategy_STRATEGY_CV, CanarySteps: []uint32{50, 5, 100}}, "must increase"},
		{&pb.StartUpdateRequest{Strategy: pb.Strategy_STRATEGY_CV, MaxErrorRate: 0.1}, "need canary_steps"},
		{&pb.StartUpdateRequest{Strategy: pb.Strategy_STRATEGY_CV, CanarySteps: []uint32{100}, MaxErrorRate: 2}, "max_error_rate"},
		{&pb.StartUpdateRequest{Strategy: pb.Strategy_STRATEGY_CV, CanarySteps: []uint32{100}, AnalysisWindow: durationpb.New(time.Millisecond)}, "analysis_window"},
	} {
		tc.req.Service, tc.req.ToVersion = "s", "v2"
		_, err := w.admin.StartUpdate(ctx, tc.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want InvalidArgument saying %q", tc.req, err, tc.want)
		}
	}
	u, err := w.admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "s", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.admin.PromoteUpdate(ctx, &pb.PromoteUpdateRequest{Id: u.Id}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "not a canary") {
		t.Errorf("promote of a plain cv update: %v, want FailedPrecondition", err)
	}
	if _, err := w.admin.PauseUpdate(ctx, &pb.PauseUpdateRequest{Id: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("pause of an unknown update: %v, want NotFound", err)
	}
}

// Pause and resume grow the update's history: past a bound they are
// refused (ResourceExhausted), and promote and abort still work.
func TestCanaryPauseIsBounded(t *testing.T) {
	w := newCanaryWorld(t)
	ctx := context.Background()
	u, err := w.admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "s", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV,
		CanarySteps: []uint32{50, 100}})
	if err != nil {
		t.Fatal(err)
	}
	w.waitPhase(u.Id, pb.Phase_PHASE_CANARY)
	var last error
	for i := 0; i < 200 && last == nil; i++ {
		if i%2 == 0 {
			_, last = w.admin.PauseUpdate(ctx, &pb.PauseUpdateRequest{Id: u.Id})
		} else {
			_, last = w.admin.ResumeUpdate(ctx, &pb.ResumeUpdateRequest{Id: u.Id})
		}
	}
	if status.Code(last) != codes.ResourceExhausted || !strings.Contains(last.Error(), "promote or abort it") {
		t.Fatalf("200 pauses and resumes: %v, want ResourceExhausted past the bound", last)
	}
	if n := len(w.get(u.Id).History); n > 128 {
		t.Fatalf("history of %d entries", n)
	}
	if p, err := w.admin.PromoteUpdate(ctx, &pb.PromoteUpdateRequest{Id: u.Id}); err != nil || p.Phase != pb.Phase_PHASE_DRAINING {
		t.Fatalf("promote after the bound: %v %v", p.GetPhase(), err)
	}
}
