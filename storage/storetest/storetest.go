// Package storetest is the conformance suite of storage.Store: Run checks
// an implementation method by method, with the semantics the coordinator
// relies on (atomic and fenced commits, one revision per commit, leases
// whose expiry or revocation deletes the records attached to them and is
// reported by the session watch, create-if-absent routes, paging,
// quarantine). storage runs it on embedded etcd, storage/memstore on
// itself: a component test on the memory store sees what it would see on
// etcd.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// Harness is one fresh, empty store under test.
type Harness struct {
	Store storage.Store
	// Fence makes every later write of Store fail its fence, as when
	// another replica wins the election.
	Fence func(t *testing.T)
}

// Run runs the suite; newStore returns a fresh, empty store for each
// subtest (its fence held), cleaned up with t.
func Run(t *testing.T, newStore func(t *testing.T) Harness) {
	tests := []struct {
		name string
		fn   func(t *testing.T, h Harness)
	}{
		{"CommitAndLoad", testCommitAndLoad},
		{"Deletes", testDeletes},
		{"Lanes", testLanes},
		{"Atomic", testAtomic},
		{"Refused", testRefused},
		{"Fenced", testFenced},
		{"CreateRoute", testCreateRoute},
		{"TxnPages", testTxnPages},
		{"Quarantine", testQuarantine},
		{"Leases", testLeases},
		{"RevokeDeletesAttached", testRevoke},
		{"ExpiryDeletesAttached", testExpiry},
		{"KeepAliveKeepsLease", testKeepAlive},
		{"SessionWatch", testSessionWatch},
		{"AsyncHeartbeats", testAsyncHeartbeats},
		{"WriteBehind", testWriteBehind},
		{"Check", testCheck},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newStore(t))
		})
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func load(t *testing.T, st storage.Store) *storage.State {
	t.Helper()
	s, err := st.Load(ctxFor(t))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

func names(recs []storage.Record) []string {
	out := []string{}
	for _, r := range recs {
		out = append(out, r.Name)
	}
	return out
}

func values(recs []storage.Record) []string {
	out := []string{}
	for _, r := range recs {
		out = append(out, string(r.Value))
	}
	return out
}

func grant(t *testing.T, st storage.Store, ttl time.Duration) storage.LeaseID {
	t.Helper()
	id, got, err := st.Grant(ctxFor(t), ttl)
	if err != nil {
		t.Fatalf("Grant: %v", err)
	}
	if got < ttl || got < storage.MinTTL || got%time.Second != 0 {
		t.Fatalf("Grant(%v) set TTL %v: want at least it and MinTTL, whole seconds", ttl, got)
	}
	return id
}

func commit(t *testing.T, st storage.Store, ops ...storage.Op) {
	t.Helper()
	if err := st.Commit(ctxFor(t), ops...); err != nil {
		t.Fatalf("Commit: %v", err)
	}
}

func session(id string, lease storage.LeaseID) *pb.SessionRecord {
	return &pb.SessionRecord{InstanceId: id, Service: "svc", Version: "v1", LeaseId: int64(lease),
		HeartbeatInterval: durationpb.New(time.Second), AllowedMisses: 1}
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Every kind of record a Commit writes is what Load (and Txns) read back,
// in key order, all at the commit's revision.
func testCommitAndLoad(t *testing.T, h Harness) {
	st := h.Store
	lease := grant(t, st, 30*time.Second)
	sp := &pb.SelfPreservationRecord{Ratio: 0.8, MinCount: 3}
	up := &pb.Update{Id: "u1", Service: "auth", ToVersion: "v2"}
	an := &pb.AnalysisRecord{UpdateId: "u1", NewVersion: &pb.AnalysisWindow{Slots: []*pb.AnalysisSlot{{Calls: 3, Errors: 1, Latency: []uint32{0, 2}}}}}
	commit(t, st,
		storage.PutService(&pb.ServiceRecord{Name: "portal", Dependencies: []string{"auth"}}),
		storage.PutService(&pb.ServiceRecord{Name: "auth"}),
		storage.PutRoute("auth", "v1"),
		storage.PutSession(session("a-1", lease), lease),
		storage.PutUpdate(up),
		storage.PutPin("auth", "T1", "v1", lease),
		storage.PutPin("auth", "T2", "v2", storage.NoLease),
		storage.PutSelfPreservation(sp),
		storage.PutAnalysis(an),
		storage.PutTxn(&pb.TxnRecord{TxnId: "T1", Owner: "a-1", Entry: "portal"}, lease),
	)
	s := load(t, st)
	if got := names(s.Services); !slices.Equal(got, []string{"auth", "portal"}) {
		t.Errorf("services %v", got)
	}
	if got, vs := names(s.Routes), values(s.Routes); !slices.Equal(got, []string{"auth"}) || vs[0] != "v1" {
		t.Errorf("routes %v %v", got, vs)
	}
	if got := names(s.Sessions); !slices.Equal(got, []string{"a-1"}) || s.Sessions[0].Lease != lease {
		t.Errorf("sessions %v (lease %v, want %v)", got, s.Sessions, lease)
	}
	var rec pb.SessionRecord
	if err := proto.Unmarshal(s.Sessions[0].Value, &rec); err != nil || !proto.Equal(&rec, session("a-1", lease)) {
		t.Errorf("session record %v %v", &rec, err)
	}
	if got := names(s.Updates); !slices.Equal(got, []string{"u1"}) {
		t.Errorf("updates %v", got)
	}
	var u pb.Update
	if err := proto.Unmarshal(s.Updates[0].Value, &u); err != nil || !proto.Equal(&u, up) {
		t.Errorf("update record %v %v", &u, err)
	}
	if got, vs := names(s.Pins), values(s.Pins); !slices.Equal(got, []string{"auth/T1", "auth/T2"}) || !slices.Equal(vs, []string{"v1", "v2"}) {
		t.Errorf("pins %v %v", got, vs)
	}
	if s.Pins[0].Lease != lease || s.Pins[1].Lease != storage.NoLease {
		t.Errorf("pin leases %v %v, want %v and none", s.Pins[0].Lease, s.Pins[1].Lease, lease)
	}
	var got pb.SelfPreservationRecord
	if s.SelfPreservation == nil || proto.Unmarshal(s.SelfPreservation.Value, &got) != nil || !proto.Equal(&got, sp) {
		t.Errorf("self-preservation %v", s.SelfPreservation)
	}
	var gotAn pb.AnalysisRecord
	if got := names(s.Analyses); !slices.Equal(got, []string{"u1"}) || proto.Unmarshal(s.Analyses[0].Value, &gotAn) != nil || !proto.Equal(&gotAn, an) {
		t.Errorf("analyses %v", s.Analyses)
	}
	rev := s.Services[0].ModRev
	if rev <= 0 || s.Rev < rev {
		t.Errorf("revisions: record %d, load %d", rev, s.Rev)
	}
	for _, r := range slices.Concat(s.Services, s.Routes, s.Sessions, s.Updates, s.Pins, s.Analyses) {
		if r.ModRev != rev {
			t.Errorf("%s at revision %d, want %d: one commit, one revision", r.Key, r.ModRev, rev)
		}
	}
	k := st.Keys()
	if s.Sessions[0].Key != k.Session("a-1") || s.Pins[0].Key != k.Pin("auth", "T1") || s.SelfPreservation.Key != k.SelfPreservation() ||
		s.Analyses[0].Key != k.Analysis("u1") {
		t.Errorf("keys %q %q %q %q do not follow Keys", s.Sessions[0].Key, s.Pins[0].Key, s.SelfPreservation.Key, s.Analyses[0].Key)
	}
	txns, more, err := st.Txns(ctxFor(t), "", 10)
	if err != nil || more || len(txns) != 1 || txns[0].Name != "T1" || txns[0].Lease != lease || txns[0].Key != k.Txn("T1") {
		t.Fatalf("Txns = %v %v %v", txns, more, err)
	}

	// A later commit moves the revision on.
	commit(t, st, storage.PutRoute("auth", "v2"))
	if s2 := load(t, st); s2.Routes[0].ModRev <= rev || string(s2.Routes[0].Value) != "v2" || s2.Rev < s2.Routes[0].ModRev {
		t.Errorf("route after a second commit: %+v", s2.Routes[0])
	}
	if err := st.Commit(ctxFor(t)); err != nil {
		t.Errorf("empty Commit: %v", err)
	}
}

// Each delete removes its record and nothing else; DeleteServicePins
// removes one service's pins.
func testDeletes(t *testing.T, h Harness) {
	st := h.Store
	commit(t, st,
		storage.PutService(&pb.ServiceRecord{Name: "a"}), storage.PutService(&pb.ServiceRecord{Name: "b"}),
		storage.PutRoute("a", "v1"), storage.PutRoute("b", "v1"),
		storage.PutSession(session("a-1", 0), storage.NoLease), storage.PutSession(session("b-1", 0), storage.NoLease),
		storage.PutUpdate(&pb.Update{Id: "u1"}), storage.PutUpdate(&pb.Update{Id: "u2"}),
		storage.PutPin("a", "T1", "v1", 0), storage.PutPin("a", "T2", "v1", 0), storage.PutPin("ab", "T1", "v1", 0),
		storage.PutPin("b", "T1", "v1", 0),
		storage.PutTxn(&pb.TxnRecord{TxnId: "T1"}, 0), storage.PutTxn(&pb.TxnRecord{TxnId: "T2"}, 0),
		storage.PutSelfPreservation(&pb.SelfPreservationRecord{}),
		storage.PutAnalysis(&pb.AnalysisRecord{UpdateId: "u1"}), storage.PutAnalysis(&pb.AnalysisRecord{UpdateId: "u2"}),
	)
	commit(t, st,
		storage.DeleteService("a"), storage.DeleteRoute("a"), storage.DeleteSession("a-1"), storage.DeleteUpdate("u1"),
		storage.DeleteServicePins("a"), storage.DeleteTxn("T1"), storage.DeleteSelfPreservation(), storage.DeleteAnalysis("u1"),
		storage.DeleteUpdate("missing"), // deleting nothing is no error
	)
	s := load(t, st)
	for what, got := range map[string][]string{
		"services": names(s.Services), "routes": names(s.Routes), "sessions": names(s.Sessions),
		"updates": names(s.Updates), "pins": names(s.Pins), "analyses": names(s.Analyses),
	} {
		want := map[string][]string{"services": {"b"}, "routes": {"b"}, "sessions": {"b-1"}, "updates": {"u2"},
			"pins": {"ab/T1", "b/T1"}, "analyses": {"u2"}}[what]
		if !slices.Equal(got, want) {
			t.Errorf("%s after deletes: %v, want %v", what, got, want)
		}
	}
	if s.SelfPreservation != nil {
		t.Errorf("self-preservation record survived its delete")
	}
	if txns, _, _ := st.Txns(ctxFor(t), "", 10); !slices.Equal(names(txns), []string{"T2"}) {
		t.Errorf("txns after delete: %v", names(txns))
	}
}

// A commit with a put on a dead lease writes nothing at all.
func testAtomic(t *testing.T, h Harness) {
	st := h.Store
	dead := grant(t, st, 30*time.Second)
	if err := st.Revoke(ctxFor(t), dead); err != nil {
		t.Fatal(err)
	}
	err := st.Commit(ctxFor(t),
		storage.PutRoute("a", "v1"),
		storage.PutTxn(&pb.TxnRecord{TxnId: "T1"}, dead),
		storage.PutService(&pb.ServiceRecord{Name: "a"}))
	if !errors.Is(err, storage.ErrLeaseExpired) {
		t.Fatalf("Commit with a dead lease = %v, want ErrLeaseExpired", err)
	}
	s := load(t, st)
	if len(s.Routes)+len(s.Services) != 0 {
		t.Fatalf("a failed commit wrote %v %v", names(s.Routes), names(s.Services))
	}
	if txns, _, _ := st.Txns(ctxFor(t), "", 10); len(txns) != 0 {
		t.Fatalf("a failed commit wrote txns %v", names(txns))
	}
}

// Too many ops, two ops on one key, a zero Op: refused whole, for good.
func testRefused(t *testing.T, h Harness) {
	st := h.Store
	many := make([]storage.Op, storage.DefaultMaxOps+1)
	for i := range many {
		many[i] = storage.PutRoute(fmt.Sprintf("s%03d", i), "v1")
	}
	if err := st.Commit(ctxFor(t), many...); !errors.Is(err, storage.ErrRefused) {
		t.Errorf("Commit of %d ops = %v, want ErrRefused", len(many), err)
	}
	if err := st.Commit(ctxFor(t), many[:storage.DefaultMaxOps]...); err != nil {
		t.Errorf("Commit of DefaultMaxOps ops = %v", err)
	}
	if err := st.Commit(ctxFor(t), storage.PutRoute("x", "v1"), storage.PutRoute("x", "v2")); !errors.Is(err, storage.ErrRefused) {
		t.Errorf("Commit with one key twice = %v, want ErrRefused", err)
	}
	if err := st.Commit(ctxFor(t), storage.DeleteServicePins("x"), storage.PutPin("x", "T", "v1", 0)); !errors.Is(err, storage.ErrRefused) {
		t.Errorf("Commit deleting pins and putting one of them = %v, want ErrRefused", err)
	}
	if err := st.Commit(ctxFor(t), storage.PutRoute("y", "v1"), storage.Op{}); !errors.Is(err, storage.ErrRefused) {
		t.Errorf("Commit with a zero Op = %v, want ErrRefused", err)
	}
	s := load(t, st)
	if len(s.Routes) != storage.DefaultMaxOps {
		t.Errorf("%d routes, want the %d of the one commit accepted", len(s.Routes), storage.DefaultMaxOps)
	}
}

// Once fenced, every write fails with ErrFenced and writes nothing;
// reads go on.
func testFenced(t *testing.T, h Harness) {
	st := h.Store
	commit(t, st, storage.PutRoute("a", "v1"), storage.PutRoute("bad", "v1"))
	bad := load(t, st).Routes[1]
	h.Fence(t)
	if err := st.Commit(ctxFor(t), storage.PutRoute("a", "v2")); !errors.Is(err, storage.ErrFenced) {
		t.Errorf("Commit when fenced = %v, want ErrFenced", err)
	}
	if _, err := st.CreateRoute(ctxFor(t), "b", "v1"); !errors.Is(err, storage.ErrFenced) {
		t.Errorf("CreateRoute when fenced = %v, want ErrFenced", err)
	}
	if _, err := st.Quarantine(ctxFor(t), bad); !errors.Is(err, storage.ErrFenced) {
		t.Errorf("Quarantine when fenced = %v, want ErrFenced", err)
	}
	s := load(t, st)
	if got := values(s.Routes); !slices.Equal(names(s.Routes), []string{"a", "bad"}) || got[0] != "v1" {
		t.Errorf("routes after fenced writes: %v %v", names(s.Routes), got)
	}
}

func testCreateRoute(t *testing.T, h Harness) {
	st := h.Store
	if got, err := st.CreateRoute(ctxFor(t), "a", "v1"); err != nil || got != "v1" {
		t.Fatalf("first CreateRoute = %q %v, want v1", got, err)
	}
	if got, err := st.CreateRoute(ctxFor(t), "a", "v2"); err != nil || got != "v1" {
		t.Fatalf("second CreateRoute = %q %v, want the route stored, v1", got, err)
	}
	commit(t, st, storage.PutRoute("a", "v3"))
	if got, err := st.CreateRoute(ctxFor(t), "a", "v4"); err != nil || got != "v3" {
		t.Fatalf("CreateRoute after a put = %q %v, want v3", got, err)
	}
}

func testTxnPages(t *testing.T, h Harness) {
	st := h.Store
	var ops []storage.Op
	for i := range 25 {
		ops = append(ops, storage.PutTxn(&pb.TxnRecord{TxnId: fmt.Sprintf("T%02d", i)}, 0))
	}
	commit(t, st, ops...)
	commit(t, st, storage.PutPin("a", "T99", "v1", 0)) // not a txn record
	var got []string
	after, pages := "", 0
	for {
		recs, more, err := st.Txns(ctxFor(t), after, 10)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(recs) > 10 {
			t.Fatalf("page of %d, limit 10", len(recs))
		}
		got = append(got, names(recs)...)
		if !more {
			break
		}
		after = recs[len(recs)-1].Name
	}
	want := make([]string, 25)
	for i := range want {
		want[i] = fmt.Sprintf("T%02d", i)
	}
	if !slices.Equal(got, want) || pages != 3 {
		t.Fatalf("paged txns %v in %d pages, want %v in 3", got, pages, want)
	}
	if recs, more, err := st.Txns(ctxFor(t), "T24", 10); err != nil || more || len(recs) != 0 {
		t.Fatalf("Txns after the last = %v %v %v", names(recs), more, err)
	}
}

func testQuarantine(t *testing.T, h Harness) {
	st := h.Store
	lease := grant(t, st, 30*time.Second)
	commit(t, st, storage.PutRoute("a", "garbage"), storage.PutUpdate(&pb.Update{Id: "u1"}),
		storage.PutSession(session("s-1", lease), lease))
	if n, keys, err := st.Quarantined(ctxFor(t), 10); err != nil || n != 0 || len(keys) != 0 {
		t.Fatalf("Quarantined on an empty quarantine = %d %v %v", n, keys, err)
	}
	s := load(t, st)
	route, upd, sess := s.Routes[0], s.Updates[0], s.Sessions[0]
	to, err := st.Quarantine(ctxFor(t), route)
	if err != nil || to != st.Keys().Quarantined(route.Key) {
		t.Fatalf("Quarantine(route) = %q %v, want %q", to, err, st.Keys().Quarantined(route.Key))
	}
	// Changed since read: not moved.
	commit(t, st, storage.PutUpdate(&pb.Update{Id: "u1", Service: "changed"}))
	if _, err := st.Quarantine(ctxFor(t), upd); !errors.Is(err, storage.ErrChanged) {
		t.Fatalf("Quarantine of a changed record = %v, want ErrChanged", err)
	}
	if _, err := st.Quarantine(ctxFor(t), route); !errors.Is(err, storage.ErrChanged) {
		t.Fatalf("Quarantine of a record moved already = %v, want ErrChanged", err)
	}
	// A session's record is moved without its lease: it outlives it.
	if _, err := st.Quarantine(ctxFor(t), sess); err != nil {
		t.Fatal(err)
	}
	if err := st.Revoke(ctxFor(t), lease); err != nil {
		t.Fatal(err)
	}
	s = load(t, st)
	if len(s.Routes) != 0 || len(s.Updates) != 1 || len(s.Sessions) != 0 {
		t.Fatalf("after quarantine: routes %v updates %v sessions %v", names(s.Routes), names(s.Updates), names(s.Sessions))
	}
	n, keys, err := st.Quarantined(ctxFor(t), 1)
	if err != nil || n != 2 || len(keys) != 1 || keys[0] != "routes/a" {
		t.Fatalf("Quarantined(limit 1) = %d %v %v, want 2 [routes/a]", n, keys, err)
	}
	if n, keys, err = st.Quarantined(ctxFor(t), 10); err != nil || n != 2 || !slices.Equal(keys, []string{"routes/a", "sessions/s-1"}) {
		t.Fatalf("Quarantined = %d %v %v", n, keys, err)
	}
}

func testLeases(t *testing.T, h Harness) {
	st := h.Store
	ctx := ctxFor(t)
	id := grant(t, st, 5*time.Second)
	if short := grant(t, st, time.Millisecond); short == id {
		t.Fatal("two grants, one lease")
	}
	if ttl, err := st.KeepAliveOnce(ctx, id); err != nil || ttl != 5*time.Second {
		t.Fatalf("KeepAliveOnce = %v %v, want 5s", ttl, err)
	}
	if ttl, err := st.TimeToLive(ctx, id); err != nil || ttl <= 0 || ttl > 5*time.Second {
		t.Fatalf("TimeToLive = %v %v", ttl, err)
	}
	if err := st.Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{
		"KeepAliveOnce": func() error { _, err := st.KeepAliveOnce(ctx, id); return err }(),
		"TimeToLive":    func() error { _, err := st.TimeToLive(ctx, id); return err }(),
		"Revoke":        st.Revoke(ctx, id),
		"Commit":        st.Commit(ctx, storage.PutPin("a", "T", "v1", id)),
	} {
		if !errors.Is(err, storage.ErrLeaseExpired) {
			t.Errorf("%s of a revoked lease = %v, want ErrLeaseExpired", what, err)
		}
	}
}

// watchGone starts a session watch that records what it reports.
func watchGone(t *testing.T, st storage.Store) (storage.SessionWatch, func() []storage.SessionGone) {
	t.Helper()
	var mu sync.Mutex
	var got []storage.SessionGone
	w, err := st.WatchSessions(ctxFor(t), func(g storage.SessionGone) {
		mu.Lock()
		got = append(got, g)
		mu.Unlock()
	})
	if err != nil {
		t.Fatalf("WatchSessions: %v", err)
	}
	t.Cleanup(w.Close)
	return w, func() []storage.SessionGone {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// attach writes a session, a transaction record and a pin on lease, and
// one record on no lease.
func attach(t *testing.T, st storage.Store, lease storage.LeaseID, inst string) {
	commit(t, st, storage.PutSession(session(inst, lease), lease),
		storage.PutTxn(&pb.TxnRecord{TxnId: "T-" + inst, Owner: inst}, lease),
		storage.PutPin("auth", "T-"+inst, "v1", lease),
		storage.PutRoute("auth", "v1"))
}

func checkDetached(t *testing.T, st storage.Store, inst string) {
	t.Helper()
	s := load(t, st)
	if len(s.Sessions) != 0 || len(s.Pins) != 0 || len(s.Routes) != 1 {
		t.Fatalf("after the lease ended: sessions %v pins %v routes %v; want only the route",
			names(s.Sessions), names(s.Pins), names(s.Routes))
	}
	if txns, _, _ := st.Txns(ctxFor(t), "", 10); len(txns) != 0 {
		t.Fatalf("transaction records %v outlived their lease", names(txns))
	}
}

func testRevoke(t *testing.T, h Harness) {
	st := h.Store
	_, gone := watchGone(t, st)
	lease := grant(t, st, 30*time.Second)
	attach(t, st, lease, "r-1")
	if err := st.Revoke(ctxFor(t), lease); err != nil {
		t.Fatal(err)
	}
	checkDetached(t, st, "r-1")
	eventually(t, 10*time.Second, "the watch to report the session gone", func() bool { return len(gone()) == 1 })
	g := gone()[0]
	var prev pb.SessionRecord
	if g.Instance != "r-1" || g.Lease != lease || proto.Unmarshal(g.Prev, &prev) != nil || prev.InstanceId != "r-1" || g.Rev <= 0 {
		t.Fatalf("gone = %+v, want r-1 on lease %v with its last value", g, lease)
	}
}

func testExpiry(t *testing.T, h Harness) {
	st := h.Store
	w, gone := watchGone(t, st)
	lease := grant(t, st, storage.MinTTL)
	attach(t, st, lease, "e-1")
	if l, ok := w.Lease("e-1"); !ok || l != lease {
		eventually(t, 5*time.Second, "the watch to see the session", func() bool {
			l, ok := w.Lease("e-1")
			return ok && l == lease
		})
	}
	start := time.Now()
	eventually(t, 15*time.Second, "the lease to expire", func() bool { return len(gone()) == 1 })
	if took := time.Since(start); took < storage.MinTTL/2 {
		t.Fatalf("expired after %v, TTL %v", took, storage.MinTTL)
	}
	if g := gone()[0]; g.Instance != "e-1" || g.Lease != lease {
		t.Fatalf("gone = %+v", g)
	}
	checkDetached(t, st, "e-1")
	if _, ok := w.Lease("e-1"); ok {
		t.Fatal("the watch still sees the expired session")
	}
	if _, err := st.KeepAliveOnce(ctxFor(t), lease); !errors.Is(err, storage.ErrLeaseExpired) {
		t.Fatalf("KeepAliveOnce of an expired lease = %v, want ErrLeaseExpired", err)
	}
}

func testKeepAlive(t *testing.T, h Harness) {
	st := h.Store
	lease := grant(t, st, storage.MinTTL)
	attach(t, st, lease, "k-1")
	for end := time.Now().Add(2 * storage.MinTTL); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		if _, err := st.KeepAliveOnce(ctxFor(t), lease); err != nil {
			t.Fatalf("KeepAliveOnce: %v", err)
		}
	}
	if s := load(t, st); len(s.Sessions) != 1 {
		t.Fatal("a lease kept alive expired")
	}
}

func testSessionWatch(t *testing.T, h Harness) {
	st := h.Store
	l1 := grant(t, st, 30*time.Second)
	commit(t, st, storage.PutSession(session("w-1", l1), l1), storage.PutSession(session("w-2", 0), storage.NoLease))
	w, gone := watchGone(t, st)
	if l, ok := w.Lease("w-1"); !ok || l != l1 {
		t.Fatalf("Lease(w-1) = %v %v, want %v: the watch starts loaded", l, ok, l1)
	}
	if l, ok := w.Lease("w-2"); !ok || l != storage.NoLease {
		t.Fatalf("Lease(w-2) = %v %v", l, ok)
	}
	if _, ok := w.Lease("none"); ok {
		t.Fatal("Lease of no session")
	}
	// A new lease replaces the old under one key: no deletion.
	l2 := grant(t, st, 30*time.Second)
	commit(t, st, storage.PutSession(session("w-1", l2), l2))
	eventually(t, 5*time.Second, "the new lease", func() bool { l, _ := w.Lease("w-1"); return l == l2 })
	if err := st.Revoke(ctxFor(t), l1); err != nil {
		t.Fatal(err)
	}
	commit(t, st, storage.DeleteSession("w-2"))
	commit(t, st, storage.DeleteSession("w-1"))
	eventually(t, 10*time.Second, "two deletions", func() bool { return len(gone()) >= 2 })
	time.Sleep(100 * time.Millisecond)
	got := gone()
	if len(got) != 2 || got[0].Instance != "w-2" || got[1].Instance != "w-1" || got[1].Lease != l2 || got[0].Rev >= got[1].Rev {
		t.Fatalf("gone = %+v, want w-2 then w-1 (on %v), in revision order", got, l2)
	}
	w.Close()
	commit(t, st, storage.PutSession(session("w-3", 0), 0))
	commit(t, st, storage.DeleteSession("w-3"))
	time.Sleep(100 * time.Millisecond)
	if n := len(gone()); n != 2 {
		t.Fatalf("%d deletions reported after Close", n)
	}
}

// storage.Leases on the store: heartbeats answer at once, refresh the
// lease, and report its expiry.
func testAsyncHeartbeats(t *testing.T, h Harness) {
	st := h.Store
	l := storage.NewLeases(st, slog.New(slog.DiscardHandler))
	defer l.Close()
	id, err := l.Grant(ctxFor(t), storage.MinTTL)
	if err != nil {
		t.Fatal(err)
	}
	if r := l.Heartbeat(id); r.Pending || r.TTL != storage.MinTTL {
		t.Fatalf("first Heartbeat = %+v, want the grant", r)
	}
	eventually(t, 5*time.Second, "a keep-alive result", func() bool {
		r := l.Heartbeat(id)
		return r.Err == nil && r.TTL == storage.MinTTL && !r.At.IsZero()
	})
	if err := st.Revoke(ctxFor(t), id); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "Heartbeat to report the lease gone", func() bool {
		return errors.Is(l.Heartbeat(id).Err, storage.ErrLeaseExpired)
	})
}

// storage.WriteBehind on the store: batches land, a dead lease's records
// are dropped and reported once, the others written.
func testWriteBehind(t *testing.T, h Harness) {
	st := h.Store
	live := grant(t, st, 30*time.Second)
	dead := grant(t, st, 30*time.Second)
	if err := st.Revoke(ctxFor(t), dead); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var pending []storage.Op
	var reported []storage.LeaseID
	for i := range 300 {
		lease := live
		if i%3 == 1 {
			lease = dead
		}
		pending = append(pending, storage.PutTxn(&pb.TxnRecord{TxnId: fmt.Sprintf("T%03d", i)}, lease))
	}
	w := storage.NewWriteBehind(st, storage.WriteBehindConfig{
		Logger: slog.New(slog.DiscardHandler),
		Collect: func(n int) []storage.Op {
			mu.Lock()
			defer mu.Unlock()
			n = min(n, len(pending))
			out := pending[:n:n]
			pending = pending[n:]
			return out
		},
		OnLeaseNotFound: func(id storage.LeaseID) {
			mu.Lock()
			reported = append(reported, id)
			mu.Unlock()
		},
	})
	if err := w.Flush(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for after := ""; ; {
		recs, more, err := st.Txns(ctxFor(t), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		n += len(recs)
		if !more {
			break
		}
		after = recs[len(recs)-1].Name
	}
	mu.Lock()
	defer mu.Unlock()
	if n != 200 || !slices.Equal(reported, []storage.LeaseID{dead}) {
		t.Fatalf("%d records written, dead leases reported %v; want 200 and [%v]", n, reported, dead)
	}
	if s := w.Stats(); s.Dropped != 100 || s.Ops != 200 || s.Txns < 2 {
		t.Fatalf("Stats = %+v", s)
	}
}

func testCheck(t *testing.T, h Harness) {
	if err := h.Store.Check(ctxFor(t)); err != nil {
		t.Fatalf("Check = %v", err)
	}
}

// Lanes (DESIGN.md §4.9) are stored whole, read back by Load in name
// order at the commit's revision, replaced by a put and gone after a
// delete, which touches no other lane.
func testLanes(t *testing.T, h Harness) {
	st := h.Store
	gray := &pb.Lane{Name: "gray", Header: "x-lane", Tag: "gray",
		Members: []*pb.ServiceVersion{{Service: "auth", Version: "v2"}, {Service: "proc", Version: "v2"}}}
	blue := &pb.Lane{Name: "blue", Header: "x-env", Tag: "b", Members: []*pb.ServiceVersion{{Service: "auth", Version: "v3"}}}
	commit(t, st, storage.PutLane(gray), storage.PutLane(blue), storage.PutRoute("auth", "v1"))
	s := load(t, st)
	if got := names(s.Lanes); !slices.Equal(got, []string{"blue", "gray"}) {
		t.Fatalf("lanes %v, want [blue gray]", got)
	}
	for i, want := range []*pb.Lane{blue, gray} {
		var got pb.Lane
		if err := proto.Unmarshal(s.Lanes[i].Value, &got); err != nil || !proto.Equal(&got, want) {
			t.Errorf("lane %d = %v (%v), want %v", i, &got, err, want)
		}
		if s.Lanes[i].ModRev != s.Routes[0].ModRev || s.Lanes[i].Key != st.Keys().Lane(want.Name) {
			t.Errorf("lane %s: key %q rev %d, want %q rev %d", want.Name, s.Lanes[i].Key, s.Lanes[i].ModRev, st.Keys().Lane(want.Name), s.Routes[0].ModRev)
		}
	}
	edited := proto.Clone(gray).(*pb.Lane)
	edited.Members[1].Version = "v3"
	commit(t, st, storage.PutLane(edited))
	commit(t, st, storage.DeleteLane("blue"), storage.DeleteLane("missing"))
	s = load(t, st)
	var got pb.Lane
	if names(s.Lanes)[0] != "gray" || len(s.Lanes) != 1 || proto.Unmarshal(s.Lanes[0].Value, &got) != nil || !proto.Equal(&got, edited) {
		t.Errorf("after edit and delete: lanes %v (%v), want only %v", names(s.Lanes), &got, edited)
	}
	if len(s.Routes) != 1 {
		t.Errorf("a lane delete touched routes: %v", names(s.Routes))
	}
}
