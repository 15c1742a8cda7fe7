package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// chainWorld is s0 -> s1 -> s2 with s1@v2 registered.
func chainWorld(t *testing.T) *world {
	return newWorld(t, rand.New(rand.NewPCG(1, 2)), 3, 0, "s1@v2")
}

func (w *world) getUpdate(id string) *pb.Update {
	w.t.Helper()
	u, err := w.ts.Admin.GetUpdate(context.Background(), &pb.GetUpdateRequest{Id: id})
	if err != nil {
		w.t.Fatal(err)
	}
	return u
}

// A transaction that used s1 and may call it again blocks WF forever; the
// timeout aborts cleanly: the default stays v1 and later calls go there.
func TestWFTimeoutAborts(t *testing.T) {
	w := chainWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gate := make(chan struct{})
	paused := w.paused(ctx, "s1", 1, gate)
	u := w.startUpdate("s1", "v2", pb.Strategy_STRATEGY_WF, 300*time.Millisecond, 0)
	u = w.waitFinished(u.Id, 10*time.Second)
	if u.Phase != pb.Phase_PHASE_ABORTED || !strings.Contains(u.Reason, "timeout") {
		t.Fatalf("update = %s %q, want ABORTED by the timeout", u.Phase, u.Reason)
	}
	close(gate)
	if err := paused(); err != nil {
		t.Fatal(err)
	}
	entry := w.inst["s0"]["v1"]
	if err := entry.WaitRouting(ctx, func(*pb.Routing) bool {
		r := entry.Route("s1")
		return r.DefaultVersion == "v1" && !r.UpdateMode
	}); err != nil {
		t.Fatalf("route after abort = %v, want v1 and out of update mode: %v", entry.Route("s1"), err)
	}
	if v := w.violations(); len(v) > 0 || w.ranOn("s1", "v2") != 0 {
		t.Fatalf("violations %v, ran on v2 %d; want none", v, w.ranOn("s1", "v2"))
	}
}

// blockedBF starts a chain world with a transaction that used s1 and waits
// at the returned gate before calling it again, and a BF update of s1 that
// it blocks (in WAITING). release opens the gate and waits for it to end.
func blockedBF(t *testing.T, ctx context.Context, maxBlock time.Duration) (w *world, u *pb.Update, release func() error) {
	w = chainWorld(t)
	gate := make(chan struct{})
	paused := w.paused(ctx, "s1", 1, gate)
	u = w.startUpdate("s1", "v2", pb.Strategy_STRATEGY_BF, 0, maxBlock)
	w.waitPhase(u.Id, pb.Phase_PHASE_WAITING)
	var once sync.Once
	return w, u, func() error {
		once.Do(func() { close(gate) })
		return paused()
	}
}

// BF holds a call of a transaction that has not used s1 while another that
// used it may still call it; when that one ends the update switches and
// the held call is released to v2.
func TestBFReleasesHeldCallsOnSwitch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, u, release := blockedBF(t, ctx, 30*time.Second)
	entry := w.inst["s0"]["v1"]
	servertest_send(t, entry, simsidecar.Begin("fresh", 100))
	got := make(chan string, 1)
	go func() {
		v, err := entry.RouteCall(ctx, "fresh", 100, "s1", 101)
		if err != nil {
			t.Error(err)
		}
		got <- v
	}()
	w.eventuallyHeld(u.Id, 1)
	select {
	case v := <-got:
		t.Fatalf("held call answered %q before the switch", v)
	case <-time.After(50 * time.Millisecond):
	}
	if err := release(); err != nil { // the blocker calls s1 again (on v1), returns and ends
		t.Fatal(err)
	}
	if v := <-got; v != "v2" {
		t.Fatalf("held call released to %q, want v2", v)
	}
	if u = w.waitFinished(u.Id, 10*time.Second); u.Phase != pb.Phase_PHASE_DONE {
		t.Fatalf("update = %s %q, want DONE", u.Phase, u.Reason)
	}
}

// Past --max-block the BF update aborts and the held calls go to v1.
func TestBFMaxBlockAbortsAndReleasesToOld(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, u, release := blockedBF(t, ctx, 200*time.Millisecond)
	defer release()
	entry := w.inst["s0"]["v1"]
	servertest_send(t, entry, simsidecar.Begin("fresh", 100))
	v, err := entry.RouteCall(ctx, "fresh", 100, "s1", 101)
	if err != nil || v != "v1" {
		t.Fatalf("held call: %q %v, want released to v1 by the abort", v, err)
	}
	if u = w.getUpdate(u.Id); u.Phase != pb.Phase_PHASE_ABORTED || !strings.Contains(u.Reason, "max-block") {
		t.Fatalf("update = %s %q, want ABORTED by max-block", u.Phase, u.Reason)
	}
}

// An operator abort releases held calls to v1 too, and a second update of
// the same service while one runs is refused.
func TestAbortReleasesHeldCallsAndOneUpdatePerService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, u, release := blockedBF(t, ctx, time.Minute)
	defer release()
	_, err := w.ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "s1", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), u.Id) {
		t.Fatalf("second update: %v, want FailedPrecondition naming %s", err, u.Id)
	}
	entry := w.inst["s0"]["v1"]
	servertest_send(t, entry, simsidecar.Begin("fresh", 100))
	got := make(chan string, 1)
	go func() {
		v, _ := entry.RouteCall(ctx, "fresh", 100, "s1", 101)
		got <- v
	}()
	w.eventuallyHeld(u.Id, 1)
	a, err := w.ts.Admin.AbortUpdate(ctx, &pb.AbortUpdateRequest{Id: u.Id, Reason: "operator changed their mind"})
	if err != nil || a.Phase != pb.Phase_PHASE_ABORTED || a.Reason != "operator changed their mind" {
		t.Fatalf("abort: %v %v", a, err)
	}
	if v := <-got; v != "v1" {
		t.Fatalf("held call released to %q by the abort, want v1", v)
	}
	if _, err := w.ts.Admin.AbortUpdate(ctx, &pb.AbortUpdateRequest{Id: u.Id}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("second abort: %v, want FailedPrecondition", err)
	}
}

// Aborting a CV update after the switch keeps every transaction on the
// version it used (pins stay) and sends new ones back to v1; the abort is
// complete once nothing can use v2 any more.
func TestCVAbortAfterSwitchRollsBackConsistently(t *testing.T) {
	w := chainWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A transaction used s1 on v1 and may call it again: v1 cannot drain.
	oldGate := make(chan struct{})
	onOld := w.paused(ctx, "s1", 1, oldGate)
	u := w.startUpdate("s1", "v2", pb.Strategy_STRATEGY_CV, 0, 0)
	w.waitPhase(u.Id, pb.Phase_PHASE_DRAINING)
	// A transaction uses s1 on v2 and stays live.
	gate := make(chan struct{})
	onNew := w.paused(ctx, "s1", 1, gate)
	if w.ranOn("s1", "v2") != 1 {
		t.Fatalf("the transaction started after the switch did not run on v2")
	}
	if _, err := w.ts.Admin.AbortUpdate(ctx, &pb.AbortUpdateRequest{Id: u.Id}); err != nil {
		t.Fatal(err)
	}
	if r := w.getUpdate(u.Id); r.Phase != pb.Phase_PHASE_ABORTED || r.FinishedAt == nil || r.Progress.GetOldTransactions() != 1 {
		t.Fatalf("after abort: %s progress %v, want ABORTED with 1 transaction left on v2", r.Phase, r.Progress)
	}
	// New transactions go back to v1.
	entry := w.inst["s0"]["v1"]
	servertest_send(t, entry, simsidecar.Begin("after-abort", 100))
	if v, err := entry.RouteCall(ctx, "after-abort", 100, "s1", 101); err != nil || v != "v1" {
		t.Fatalf("new transaction after abort routed to %q %v, want v1", v, err)
	}
	servertest_send(t, entry, simsidecar.Return("after-abort", 101), simsidecar.End("after-abort"))
	close(oldGate) // the v1 transaction calls s1 again: still v1
	if err := onOld(); err != nil {
		t.Fatal(err)
	}
	close(gate) // the v2 transaction calls s1 again: still v2
	if err := onNew(); err != nil {
		t.Fatal(err)
	}
	if v := w.violations(); len(v) > 0 {
		t.Fatalf("violations: %v", v)
	}
	u = w.waitFinished(u.Id, 10*time.Second)
	if u.Phase != pb.Phase_PHASE_ABORTED {
		t.Fatalf("update = %s, want ABORTED", u.Phase)
	}
	// The table that ends update mode reaches the sidecars asynchronously.
	err := entry.WaitRouting(ctx, func(*pb.Routing) bool {
		r := entry.Route("s1")
		return !r.UpdateMode && r.DefaultVersion == "v1"
	})
	if err != nil {
		t.Fatalf("route after the rollback drained = %v, want v1 out of update mode: %v", entry.Route("s1"), err)
	}
}

// A session that may call the service (it is in its routing scope) and
// does not acknowledge update mode keeps the update in PREPARING; once it
// acknowledges, the update goes on. A session that cannot call it (s2 of
// s0 -> s1 -> s2, updating s1) is not waited for (DESIGN.md §4.1): it never
// acknowledges here.
func TestPrepareWaitsForEverySession(t *testing.T) {
	w := chainWorld(t)
	lazy := w.inst["s0"]["v1"]
	lazy.SetAutoAck(false)
	w.inst["s2"]["v1"].SetAutoAck(false)
	u := w.startUpdate("s1", "v2", pb.Strategy_STRATEGY_CV, 0, 0)
	w.eventuallyUnacked(u.Id, 1)
	time.Sleep(50 * time.Millisecond)
	if p := w.getUpdate(u.Id).Phase; p != pb.Phase_PHASE_PREPARING {
		t.Fatalf("phase %s while a session has not acknowledged, want PREPARING", p)
	}
	if err := lazy.AckRouting(lazy.Routing().Revision); err != nil {
		t.Fatal(err)
	}
	if u = w.waitFinished(u.Id, 10*time.Second); u.Phase != pb.Phase_PHASE_DONE {
		t.Fatalf("update = %s, want DONE", u.Phase)
	}
}

// The update API over REST, and the watch stream over gRPC.
func TestUpdateRESTAndWatch(t *testing.T) {
	w := chainWorld(t)
	base := "http://" + w.ts.HTTPAddr()
	resp, err := http.Post(base+"/v1/services/s1/updates", "application/json",
		bytes.NewBufferString(`{"toVersion":"v2","strategy":"STRATEGY_CV"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST updates: HTTP %d %s", resp.StatusCode, body)
	}
	var u pb.Update
	if err := protojson.Unmarshal(body, &u); err != nil {
		t.Fatal(err)
	}
	stream, err := w.ts.Admin.WatchUpdate(context.Background(), &pb.WatchUpdateRequest{Id: u.Id})
	if err != nil {
		t.Fatal(err)
	}
	var seen []pb.Phase
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) == 0 || seen[len(seen)-1] != m.Phase {
			seen = append(seen, m.Phase)
		}
	}
	if seen[len(seen)-1] != pb.Phase_PHASE_DONE {
		t.Fatalf("watched phases %v, want to end at DONE", seen)
	}
	var got pb.Update
	if code := w.ts.REST("/v1/updates/"+u.Id, &got); code != http.StatusOK || got.Phase != pb.Phase_PHASE_DONE || len(got.History) != 4 {
		t.Fatalf("GET update: HTTP %d %v, want DONE after 4 phases", code, &got)
	}
	var list pb.ListUpdatesResponse
	if code := w.ts.REST("/v1/updates?service=s1", &list); code != http.StatusOK || len(list.Updates) != 1 {
		t.Fatalf("GET updates: HTTP %d %v", code, list.Updates)
	}
	resp, err = http.Post(base+"/v1/updates/"+u.Id+":abort", "application/json", bytes.NewBufferString(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	var e map[string]any
	_ = json.Unmarshal(body, &e)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(e["message"].(string), "DONE already") {
		t.Fatalf("abort of a finished update: HTTP %d %s, want 400 saying it is done", resp.StatusCode, body)
	}
	for path, want := range map[string]int{
		"/v1/updates/nope": http.StatusNotFound,
	} {
		if code := w.ts.REST(path, nil); code != want {
			t.Fatalf("GET %s: HTTP %d, want %d", path, code, want)
		}
	}
	for _, req := range []*pb.StartUpdateRequest{
		{Service: "s1", ToVersion: "v9", Strategy: pb.Strategy_STRATEGY_CV},               // not registered
		{Service: "s1", ToVersion: "v2"},                                                  // no strategy
		{Service: "nope", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV},             // unknown service
		{Service: "s1", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV, Timeout: nil}, // v2 is the default now
	} {
		if _, err := w.ts.Admin.StartUpdate(context.Background(), req); err == nil {
			t.Fatalf("StartUpdate(%v) succeeded, want a clear error", req)
		}
	}
}

func (w *world) eventuallyHeld(id string, n uint32) {
	w.t.Helper()
	servertest_eventually(w.t, func() bool { return w.getUpdate(id).Progress.GetHeldCalls() == n }, "held calls")
}

func (w *world) eventuallyUnacked(id string, n uint32) {
	w.t.Helper()
	servertest_eventually(w.t, func() bool { return w.getUpdate(id).Progress.GetUnacknowledgedSessions() == n }, "unacknowledged sessions")
}

// A held call whose sidecar goes away is forgotten: it no longer counts as
// held (nor toward --max-block).
func TestBFForgetsHeldCallsOfDisconnectedSidecars(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w, u, release := blockedBF(t, ctx, time.Minute)
	defer release()
	other, _ := w.ts.Register(&pb.Register{InstanceId: "s0-b", Service: "s0", Version: "v1", Dependencies: []string{"s1"},
		HeartbeatInterval: durationpb.New(time.Minute)})
	if err := other.WaitRouting(ctx, func(r *pb.Routing) bool { return other.Route("s1").GetUpdateMode() }); err != nil {
		t.Fatal(err)
	}
	servertest_send(t, other, simsidecar.Begin("gone", 1))
	go func() { _, _ = other.RouteCall(ctx, "gone", 1, "s1", 2) }()
	w.eventuallyHeld(u.Id, 1)
	other.Close()
	w.eventuallyHeld(u.Id, 0)
}

// While a service is mid-update, a transaction's first use of it is pinned
// in etcd before the CallDecision is sent; the pins go when the update ends.
func TestPinCommittedBeforeDecision(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := chainWorld(t)
	gate := make(chan struct{})
	old := w.paused(ctx, "s1", 1, gate) // keeps v1 from draining
	u := w.startUpdate("s1", "v2", pb.Strategy_STRATEGY_CV, 0, 0)
	w.waitPhase(u.Id, pb.Phase_PHASE_DRAINING)
	entry := w.inst["s0"]["v1"]
	if err := entry.WaitRouting(ctx, func(*pb.Routing) bool { return entry.Route("s1").GetUpdateMode() }); err != nil {
		t.Fatal(err)
	}
	servertest_send(t, entry, simsidecar.Begin("pinned", 1))
	v, err := entry.RouteCall(ctx, "pinned", 1, "s1", 2)
	if err != nil || v != "v2" {
		t.Fatalf("call: %q %v, want v2", v, err)
	}
	key := w.ts.Leader().Keys().Pin("s1", "pinned")
	resp, err := w.ts.Client().Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v2" || resp.Kvs[0].Lease == 0 {
		t.Fatalf("pin %s right after the decision: %v %v, want v2 on the owner's lease", key, resp, err)
	}
	// A second call of the same transaction is not pinned again.
	servertest_send(t, entry, simsidecar.Return("pinned", 2))
	if v, err := entry.RouteCall(ctx, "pinned", 1, "s1", 3); err != nil || v != "v2" {
		t.Fatalf("second call: %q %v, want v2", v, err)
	}
	if p := w.getUpdate(u.Id).Progress; p.GetPinnedCalls() != 1 || p.GetDecidedCalls() < 2 {
		t.Fatalf("progress %v, want 1 pinned of 2+ decided", p)
	}
	servertest_send(t, entry, simsidecar.Return("pinned", 3), simsidecar.End("pinned"))
	close(gate)
	if err := old(); err != nil {
		t.Fatal(err)
	}
	if u = w.waitFinished(u.Id, 10*time.Second); u.Phase != pb.Phase_PHASE_DONE {
		t.Fatalf("update %s, want DONE", u.Phase)
	}
	resp, err = w.ts.Client().Get(ctx, w.ts.Leader().Keys().ServicePins("s1"), clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("pins after DONE: %v %v, want none", resp, err)
	}
}
