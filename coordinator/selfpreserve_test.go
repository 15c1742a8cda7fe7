package coordinator_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Self-preservation tests (DESIGN.md §7). Sessions here have 2 s leases
// (500 ms heartbeats, one miss allowed): a sidecar kept alive heartbeats
// every 200 ms, a cut one stops heartbeating and closes its stream, as one
// on the far side of a partition would look to the coordinator.

const spWait = 30 * time.Second // generous bound for anything lease-driven

// spSidecar registers instance svc@version with deps and live roots, keeps
// it alive, and returns it with a cut function.
func spSidecar(t *testing.T, ts testServer, instance, svc, version string, deps []string, roots ...string) (*simsidecar.Sidecar, *pb.Registered, func()) {
	t.Helper()
	reg := &pb.Register{
		InstanceId: instance, Service: svc, Version: version, Address: "127.0.0.1:1", Dependencies: deps,
		HeartbeatInterval: durationpb.New(500 * time.Millisecond), AllowedMisses: 1,
	}
	for _, r := range roots {
		reg.LiveRoots = append(reg.LiveRoots, &pb.LiveRoot{TxnId: r, SubId: 1})
	}
	sc, r := ts.Register(reg)
	stop := keepAlive(t, sc)
	return sc, r, func() { stop(); sc.Close() }
}

// keepAlive heartbeats sc every 200 ms until the returned stop is called
// (at cleanup at the latest) or its stream ends.
func keepAlive(t *testing.T, sc *simsidecar.Sidecar) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			hctx, hcancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := sc.Heartbeat(hctx)
			hcancel()
			if err != nil && ctx.Err() == nil {
				select {
				case <-sc.Done():
					return // the stream ended: nothing to keep alive
				default:
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func getSP(t *testing.T, ts testServer) *pb.SelfPreservation {
	t.Helper()
	sp, err := ts.AdminClient().GetSelfPreservation(context.Background(), &pb.GetSelfPreservationRequest{})
	if err != nil {
		t.Fatalf("GetSelfPreservation: %v", err)
	}
	return sp
}

func getUpdate(t *testing.T, ts testServer, id string) *pb.Update {
	t.Helper()
	u, err := ts.AdminClient().GetUpdate(context.Background(), &pb.GetUpdateRequest{Id: id})
	if err != nil {
		t.Fatalf("GetUpdate %s: %v", id, err)
	}
	return u
}

func txnMap(t *testing.T, ts testServer) map[string]*pb.Transaction {
	t.Helper()
	m := map[string]*pb.Transaction{}
	for _, tx := range ts.Txns("").Transactions {
		m[tx.TxnId] = tx
	}
	return m
}

// Eight of ten sidecars are cut off at once: self-preservation starts,
// their transactions stay (legacy, still owned by them), a BF call held for
// the switch goes to the old version, new BF calls do not wait, and a CV
// update that could switch at once does not. They come back with their live
// roots: the queue empties, the mode ends and both updates switch.
func TestSelfPreservationKeepsTransactionsAndPausesSwitches(t *testing.T) {
	ts := servertest.Start(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	portalDeps := []string{"auth", "billing"}
	p1, _, cutP1 := spSidecar(t, ts, "p-1", "portal", "v1", portalDeps)
	p2, _, _ := spSidecar(t, ts, "p-2", "portal", "v1", portalDeps) // stays
	p3, _, cutP3 := spSidecar(t, ts, "p-3", "portal", "v1", portalDeps)
	cuts := []func(){cutP1, cutP3}
	for _, id := range []string{"p-4", "p-5", "p-6"} {
		_, _, cut := spSidecar(t, ts, id, "portal", "v1", portalDeps)
		cuts = append(cuts, cut)
	}
	for _, s := range [][3]string{{"a-1", "auth", "v1"}, {"a-2", "auth", "v2"}, {"b-1", "billing", "v1"}} {
		_, _, cut := spSidecar(t, ts, s[0], s[1], s[2], nil)
		cuts = append(cuts, cut)
	}
	spSidecar(t, ts, "b-2", "billing", "v2", nil) // stays

	// T1 used auth@v1 and may call it again; T3 has not called anything.
	servertest.Send(t, p1, simsidecar.Begin("T1", 1), simsidecar.Call("T1", 1, "auth", 2), simsidecar.Return("T1", 2))
	servertest.Send(t, p3, simsidecar.Begin("T3", 1))
	bf, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "auth", ToVersion: "v2",
		Strategy: pb.Strategy_STRATEGY_BF, MaxBlock: durationpb.New(10 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, spWait, "the BF update to wait for auth to be free", func() bool {
		return getUpdate(t, ts, bf.Id).Phase == pb.Phase_PHASE_WAITING
	})
	// T2 has no past on auth: BF holds its call until the switch.
	servertest.Send(t, p2, simsidecar.Begin("T2", 1))
	held := make(chan string, 1)
	go func() {
		v, err := p2.RouteCall(ctx, "T2", 1, "auth", 2)
		if err != nil {
			v = "error: " + err.Error()
		}
		held <- v
	}()
	servertest.Eventually(t, spWait, "T2's call to be held", func() bool {
		return getUpdate(t, ts, bf.Id).GetProgress().GetHeldCalls() == 1
	})
	if sp := getSP(t, ts); sp.Active || sp.Activations != 0 {
		t.Fatalf("before the cut: %v, want inactive", sp)
	}

	for _, cut := range cuts {
		cut()
	}
	servertest.Eventually(t, spWait, "self-preservation to start", func() bool { return getSP(t, ts).Active })
	sp := getSP(t, ts)
	want := []string{"a-1", "a-2", "b-1", "p-1", "p-3", "p-4", "p-5", "p-6"}
	if !slices.Equal(sp.QueuedSessions, want) || sp.Activations != 1 || sp.Since == nil {
		t.Fatalf("self-preservation = %v, want active since some time with queued %v", sp, want)
	}
	if got := ts.Metric("coordinator_self_preservation_active"); got != 1 {
		t.Errorf("coordinator_self_preservation_active = %v, want 1", got)
	}
	if got := ts.Metric("coordinator_self_preservation_queued_sessions"); got != 8 {
		t.Errorf("coordinator_self_preservation_queued_sessions = %v, want 8", got)
	}
	if got := ts.Metric("coordinator_self_preservation_activations_total"); got != 1 {
		t.Errorf("coordinator_self_preservation_activations_total = %v, want 1", got)
	}
	// The expired sessions' transactions are kept, as legacy, theirs still.
	txns := txnMap(t, ts)
	for id, owner := range map[string]string{"T1": "p-1", "T3": "p-3"} {
		if tx := txns[id]; tx == nil || !tx.Legacy || tx.Owner != owner {
			t.Errorf("%s = %v, want kept, legacy, owned by %s", id, tx, owner)
		}
	}
	if tx := txns["T2"]; tx == nil || tx.Legacy || tx.Owner != "p-2" {
		t.Errorf("T2 = %v, want p-2's, not legacy", tx)
	}
	// The held call went to the old version when the mode started.
	select {
	case v := <-held:
		if v != "v1" {
			t.Fatalf("held call of T2 answered %q, want v1", v)
		}
	case <-time.After(spWait):
		t.Fatal("the held call of T2 was not released when self-preservation started")
	}
	// A new BF call without a past on auth runs on old at once.
	servertest.Send(t, p2, simsidecar.Begin("T4", 1))
	if v, err := p2.RouteCall(ctx, "T4", 1, "auth", 2); err != nil || v != "v1" {
		t.Fatalf("BF call during self-preservation: %q %v, want v1 at once", v, err)
	}
	if u := getUpdate(t, ts, bf.Id); u.Phase != pb.Phase_PHASE_WAITING || u.Progress.GetHeldCalls() != 0 {
		t.Fatalf("BF update = %s with %d held calls, want WAITING with none", u.Phase, u.Progress.GetHeldCalls())
	}
	// CV switches as soon as every live session is in update mode; not now.
	cv, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "billing", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, spWait, "every live session to enter update mode for billing", func() bool {
		return getUpdate(t, ts, cv.Id).GetProgress().GetUnacknowledgedSessions() == 0
	})
	if u := getUpdate(t, ts, cv.Id); u.Phase != pb.Phase_PHASE_PREPARING {
		t.Fatalf("CV update during self-preservation = %s, want PREPARING (switch paused)", u.Phase)
	}
	var h coordinator.HealthReport
	if code := ts.REST("/health", &h); code != http.StatusOK || !h.SelfPreservation.Active || len(h.SelfPreservation.Queued) != 8 || h.SelfPreservation.Since == nil {
		t.Fatalf("/health = HTTP %d %+v, want 200 reporting self-preservation with 8 queued", code, h.SelfPreservation)
	}

	// They come back. p-1 still runs T1; p-3's T3 ended while it was away.
	back := map[string]*simsidecar.Sidecar{}
	for _, id := range want {
		svc, ver, deps := "portal", "v1", portalDeps
		switch id {
		case "a-1", "a-2":
			svc, ver, deps = "auth", "v"+id[2:], nil
		case "b-1":
			svc, deps = "billing", nil
		}
		var roots []string
		if id == "p-1" {
			roots = []string{"T1"}
		}
		if getSP(t, ts).Active != true {
			t.Fatalf("self-preservation ended before %s came back", id)
		}
		sc, r, _ := spSidecar(t, ts, id, svc, ver, deps, roots...)
		switch id {
		case "p-1":
			if r.Resynced != 1 || r.Ended != 0 {
				t.Errorf("p-1 back: resynced %d ended %d, want 1 and 0", r.Resynced, r.Ended)
			}
		case "p-3":
			if r.Ended != 1 {
				t.Errorf("p-3 back: ended %d, want 1 (T3)", r.Ended)
			}
		}
		back[id] = sc
	}
	if sp := getSP(t, ts); sp.Active || len(sp.QueuedSessions) != 0 || sp.Activations != 1 {
		t.Fatalf("after every queued session came back: %v, want inactive, empty queue", sp)
	}
	txns = txnMap(t, ts)
	if tx := txns["T1"]; tx == nil || !tx.Legacy || tx.Owner != "p-1" {
		t.Fatalf("T1 after p-1 came back = %v, want legacy, owned by p-1", tx)
	}
	if txns["T3"] != nil {
		t.Fatal("T3, which p-3 no longer reports, is still live")
	}
	// The CV update switches now; both finish once the transactions end.
	servertest.Eventually(t, spWait, "the CV update to switch", func() bool {
		p := getUpdate(t, ts, cv.Id).Phase
		return p == pb.Phase_PHASE_DRAINING || p == pb.Phase_PHASE_DONE
	})
	servertest.Send(t, back["p-1"], simsidecar.End("T1"))
	servertest.Send(t, p2, simsidecar.Return("T2", 2), simsidecar.End("T2"), simsidecar.Return("T4", 2), simsidecar.End("T4"))
	for _, id := range []string{bf.Id, cv.Id} {
		servertest.Eventually(t, spWait, "update "+id+" to finish", func() bool {
			return getUpdate(t, ts, id).Phase == pb.Phase_PHASE_DONE
		})
	}
	if got := ts.Metric("coordinator_self_preservation_active"); got != 0 {
		t.Errorf("coordinator_self_preservation_active = %v after the end, want 0", got)
	}
}

// A sidecar that really died does not come back: its transactions are kept
// for its lease plus the grace, then dropped, and the mode ends.
func TestSelfPreservationGraceDropsDeadSessions(t *testing.T) {
	const grace = 5 * time.Second
	ts := servertest.Start(t, "", func(c *server.Config) { c.Coordinator.SelfPreservationGrace = grace })
	var cuts []func()
	for i, id := range []string{"p-1", "p-2", "p-3", "p-4"} {
		sc, _, cut := spSidecar(t, ts, id, "portal", "v1", []string{"auth"})
		servertest.Send(t, sc, simsidecar.Begin(servertest.TxnID(i+1), 1))
		cuts = append(cuts, cut)
	}
	spSidecar(t, ts, "a-1", "auth", "v1", nil) // stays
	for _, cut := range cuts {
		cut()
	}
	servertest.Eventually(t, spWait, "self-preservation to start", func() bool { return getSP(t, ts).Active })
	// Three come back; p-4 (transaction 4) is dead.
	for i, id := range []string{"p-1", "p-2", "p-3"} {
		spSidecar(t, ts, id, "portal", "v1", []string{"auth"}, servertest.TxnID(i+1))
	}
	sp := getSP(t, ts)
	if !sp.Active || !slices.Equal(sp.QueuedSessions, []string{"p-4"}) {
		t.Fatalf("after three came back: %v, want active with p-4 queued", sp)
	}
	dead := servertest.TxnID(4)
	servertest.Eventually(t, spWait+grace, "the dead session's grace to end", func() bool { return !getSP(t, ts).Active })
	txns := txnMap(t, ts)
	if txns[dead] != nil {
		t.Fatalf("transaction %s of the dead p-4 is still live after its grace", dead)
	}
	for i := 1; i <= 3; i++ {
		if tx := txns[servertest.TxnID(i)]; tx == nil || !tx.Legacy {
			t.Errorf("transaction %d of a session that came back = %v, want live, legacy", i, tx)
		}
	}
	if got := ts.Metric(`coordinator_sessions_dropped_total{reason="self_preservation_grace"}`); got != 1 {
		t.Errorf("sessions dropped at the end of their grace = %v, want 1", got)
	}
	if sp := getSP(t, ts); sp.Activations != 1 || len(sp.QueuedSessions) != 0 {
		t.Errorf("after the grace: %v, want one activation, nothing queued", sp)
	}
}

// One of five sessions expiring is an ordinary death: no mode, the session
// is dropped and its transactions end.
func TestSelfPreservationNotBelowThreshold(t *testing.T) {
	ts := servertest.Start(t, "")
	dead, _, cut := spSidecar(t, ts, "p-1", "portal", "v1", []string{"auth"})
	servertest.Send(t, dead, simsidecar.Begin("dead-t", 1))
	for _, id := range []string{"p-2", "p-3", "p-4"} {
		spSidecar(t, ts, id, "portal", "v1", []string{"auth"})
	}
	spSidecar(t, ts, "a-1", "auth", "v1", nil)
	cut()
	servertest.Eventually(t, spWait, "the dead session's transaction to end", func() bool {
		return txnMap(t, ts)["dead-t"] == nil
	})
	sp := getSP(t, ts)
	if sp.Active || sp.Activations != 0 || sp.RecentExpiries != 1 {
		t.Fatalf("self-preservation = %v, want inactive, never started, one recent expiry", sp)
	}
	if got := ts.Metric(`coordinator_sessions_dropped_total{reason="lease_expired"}`); got != 1 {
		t.Errorf("sessions dropped as expired = %v, want 1", got)
	}
	if got := ts.Metric("coordinator_self_preservation_activations_total"); got != 0 {
		t.Errorf("activations = %v, want 0", got)
	}
}

// singleSessionSP starts a server where one expiry is a mass expiry (ratio
// 1, min 1), with a session owning transaction T that expires.
func singleSessionSP(t testing.TB) *servertest.Server {
	ts := servertest.Start(t, "", func(c *server.Config) {
		c.Coordinator.SelfPreservationRatio = 1
		c.Coordinator.SelfPreservationMin = 1
	})
	// Not kept alive: its 2 s lease runs out.
	sc := ts.Sidecar("p-1", "portal", "v1")
	servertest.Send(t, sc, simsidecar.Begin("T", 1))
	sc.Close()
	servertest.Eventually(t, spWait, "self-preservation to start", func() bool {
		sp, err := ts.Admin.GetSelfPreservation(context.Background(), &pb.GetSelfPreservationRequest{})
		return err == nil && sp.Active
	})
	return ts
}

// An operator ends the mode over REST: the queue is dropped, its
// transactions end. Ending an inactive mode is FailedPrecondition (HTTP 400).
func TestSelfPreservationOperatorEnd(t *testing.T) {
	ts := singleSessionSP(t)
	var sp pb.SelfPreservation
	if code := ts.REST("/v1/selfpreservation", &sp); code != http.StatusOK || !sp.Active ||
		!slices.Equal(sp.QueuedSessions, []string{"p-1"}) || sp.Ratio != 1 || sp.MinCount != 1 ||
		sp.Window.AsDuration() != coordinator.DefaultSelfPreservationWindow || sp.Grace.AsDuration() != 2*coordinator.DefaultSelfPreservationWindow {
		t.Fatalf("GET /v1/selfpreservation = HTTP %d %v", code, &sp)
	}
	if tx := txnMap(t, ts)["T"]; tx == nil || !tx.Legacy || tx.Owner != "p-1" {
		t.Fatalf("T while queued = %v, want legacy, owned by p-1", tx)
	}
	var h coordinator.HealthReport
	if code := ts.REST("/health", &h); code != http.StatusOK || !h.Healthy || !h.SelfPreservation.Active {
		t.Fatalf("/health = HTTP %d %+v, want 200, healthy, self-preservation active", code, h)
	}

	code, body := post(t, ts, "/v1/selfpreservation:end")
	var ended pb.SelfPreservation
	if code != http.StatusOK {
		t.Fatalf("POST /v1/selfpreservation:end = HTTP %d %s", code, body)
	}
	if err := protojson.Unmarshal(body, &ended); err != nil || ended.Active || len(ended.QueuedSessions) != 0 || ended.Activations != 1 {
		t.Fatalf("POST /v1/selfpreservation:end = %s (%v), want inactive, nothing queued", body, err)
	}
	if n := ts.Txns("").Total; n != 0 {
		t.Fatalf("%d live transactions after the operator ended self-preservation, want 0", n)
	}
	if got := ts.Metric(`coordinator_sessions_dropped_total{reason="self_preservation_off"}`); got != 1 {
		t.Errorf("sessions dropped by the operator = %v, want 1", got)
	}
	if code := ts.REST("/health", &h); code != http.StatusOK || h.SelfPreservation.Active || len(h.SelfPreservation.Queued) != 0 {
		t.Fatalf("/health after the end = HTTP %d %+v", code, h.SelfPreservation)
	}
	if code, body := post(t, ts, "/v1/selfpreservation:end"); code != http.StatusBadRequest {
		t.Fatalf("POST /v1/selfpreservation:end when inactive = HTTP %d %s, want 400", code, body)
	}
	_, err := ts.Admin.EndSelfPreservation(context.Background(), &pb.EndSelfPreservationRequest{})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("EndSelfPreservation when inactive: %v, want FailedPrecondition", err)
	}
}

// A queued session that registers again as another version is a new
// session: the old one's transactions end.
func TestSelfPreservationReplacedSession(t *testing.T) {
	ts := singleSessionSP(t)
	_, r := ts.Register(&pb.Register{InstanceId: "p-1", Service: "portal", Version: "v2",
		HeartbeatInterval: durationpb.New(time.Minute)})
	if r.Resynced != 0 {
		t.Fatalf("registered as v2: %v, want nothing resynced", r)
	}
	if n := ts.Txns("").Total; n != 0 {
		t.Fatalf("%d live transactions after p-1 came back as v2, want 0", n)
	}
	if sp := getSP(t, ts); sp.Active {
		t.Fatalf("self-preservation = %v after its only queued session was replaced, want inactive", sp)
	}
}

func post(t *testing.T, ts *servertest.Server, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Post("http://"+ts.HTTPAddr()+path, "application/json", bytes.NewReader([]byte("{}")))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// Zero settings take the defaults, the grace twice the configured window;
// a ratio outside (0, 1] is the default too.
func TestSelfPreservationSettings(t *testing.T) {
	ts := servertest.Start(t, "", func(c *server.Config) {
		c.Coordinator.SelfPreservationWindow = 10 * time.Second
		c.Coordinator.SelfPreservationRatio = 1.5
	})
	sp := getSP(t, ts)
	if sp.Active || sp.Window.AsDuration() != 10*time.Second || sp.Grace.AsDuration() != 20*time.Second ||
		sp.Ratio != coordinator.DefaultSelfPreservationRatio || sp.MinCount != coordinator.DefaultSelfPreservationMin ||
		len(sp.QueuedSessions) != 0 || sp.Since != nil {
		t.Fatalf("settings = %v, want window 10s, grace 20s, the default ratio and min", sp)
	}
	var h coordinator.HealthReport
	if code := ts.REST("/health", &h); code != http.StatusOK || h.SelfPreservation.Active || h.SelfPreservation.Queued == nil {
		t.Fatalf("/health = HTTP %d %+v, want self-preservation inactive with an empty queue", code, h.SelfPreservation)
	}
}
