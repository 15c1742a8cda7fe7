package coordinator_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

const forgetAfter = time.Second

func withForgetAfter(d time.Duration) servertest.Option {
	return func(c *server.Config) { c.Coordinator.ForgetAfter = d }
}

// graphOf returns the services and edges ("a->b") of the graph, sorted.
func graphOf(t *testing.T, ts testServer) (services, edges []string) {
	t.Helper()
	g, err := ts.AdminClient().GetGraph(context.Background(), &pb.GetGraphRequest{})
	if err != nil {
		t.Fatalf("GetGraph: %v", err)
	}
	for _, s := range g.Services {
		services = append(services, s.Name)
	}
	for _, e := range g.Edges {
		edges = append(edges, e.From+"->"+e.To)
	}
	slices.Sort(services)
	slices.Sort(edges)
	return services, edges
}

func etcdHas(t *testing.T, ts *servertest.Server, key string) bool {
	t.Helper()
	resp, err := ts.Client().Get(context.Background(), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return len(resp.Kvs) > 0
}

// Services and versions with no session and no live transaction are
// forgotten after the grace, from memory and from etcd, learned edges with
// them; a declared dependency of a service that stays stays, as does a
// service a live transaction used; a service that comes back is new.
func TestForgetUnusedServices(t *testing.T) {
	ts := servertest.Start(t, "", withForgetAfter(forgetAfter))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p1, _, _ := spSidecar(t, ts, "p-1", "portal", "v1", []string{"auth"})
	a1, _, _ := spSidecar(t, ts, "a-1", "auth", "v1", nil)
	b1, _, _ := spSidecar(t, ts, "b-1", "billing", "v9", nil)
	// Invented names, called once: learned edges portal->ghost-i.
	servertest.Send(t, p1, simsidecar.Begin("T", 1))
	for i := range 3 {
		sub := uint64(10 + i)
		servertest.Send(t, p1, simsidecar.Call("T", 1, fmt.Sprint("ghost-", i), sub), simsidecar.Return("T", sub))
	}
	servertest.Send(t, p1, simsidecar.End("T"))
	// A live transaction still running at ghost-live (legacy: it used a
	// learned edge), and one that has only begun at portal, which may still
	// call every ghost over their learned edges: they lead nowhere, so
	// they go all the same.
	servertest.Send(t, p1, simsidecar.Begin("L", 1), simsidecar.Call("L", 1, "ghost-live", 2))
	servertest.Send(t, p1, simsidecar.Begin("P", 1))
	if tx := txnMap(t, ts)["P"]; tx == nil || tx.Legacy {
		t.Fatalf("P = %v, want live, not legacy", tx)
	}
	for _, sc := range []*simsidecar.Sidecar{b1, a1} {
		if _, err := sc.Deregister(ctx, "gone"); err != nil {
			t.Fatal(err)
		}
	}
	keys := ts.Leader().Keys()
	if !etcdHas(t, ts, keys.Service("billing")) || !etcdHas(t, ts, keys.Route("billing")) {
		t.Fatal("billing's records missing before it was forgotten")
	}

	want := []string{"auth", "ghost-live", "portal"}
	servertest.Eventually(t, 10*forgetAfter+5*time.Second, "billing and the ghosts to be forgotten", func() bool {
		s, _ := graphOf(t, ts)
		return slices.Equal(s, want)
	})
	if _, edges := graphOf(t, ts); !slices.Equal(edges, []string{"portal->auth", "portal->ghost-live"}) {
		t.Fatalf("edges = %v, want portal->auth and the learned portal->ghost-live", edges)
	}
	if etcdHas(t, ts, keys.Service("billing")) || etcdHas(t, ts, keys.Route("billing")) {
		t.Fatal("billing's record or route still in etcd after it was forgotten")
	}
	// auth has no session either, but portal declares it: it stays, and
	// so do its records.
	if !etcdHas(t, ts, keys.Service("auth")) || !etcdHas(t, ts, keys.Route("auth")) {
		t.Fatal("auth's records gone, though portal declares it")
	}
	if got := ts.Metric(`coordinator_forgotten_total{kind="service"}`); got != 4 {
		t.Errorf("services forgotten = %v, want 4 (billing, ghost-0..2)", got)
	}
	servertest.Eventually(t, 10*forgetAfter+5*time.Second, "billing's version to be forgotten", func() bool {
		return ts.Metric(`coordinator_forgotten_total{kind="version"}`) == 1
	})

	// ghost-live goes once L ends; the id it leaves is reused, cleanly.
	servertest.Send(t, p1, simsidecar.Return("L", 2), simsidecar.End("L"))
	servertest.Eventually(t, 10*forgetAfter+5*time.Second, "ghost-live to be forgotten", func() bool {
		s, _ := graphOf(t, ts)
		return slices.Equal(s, []string{"auth", "portal"})
	})
	// billing comes back, at another version: a new service, routed there.
	b2, _, _ := spSidecar(t, ts, "b-2", "billing", "v2", []string{"auth"})
	s, edges := graphOf(t, ts)
	if !slices.Equal(s, []string{"auth", "billing", "portal"}) || !slices.Equal(edges, []string{"billing->auth", "portal->auth"}) {
		t.Fatalf("graph after billing came back: %v %v", s, edges)
	}
	servertest.Send(t, b2, simsidecar.Begin("B", 1), simsidecar.Call("B", 1, "auth", 2))
	if f := ts.FreeREST("auth"); f.Free {
		t.Fatal("auth free while B runs there")
	}
	// Routed at its new version: seen by a sidecar whose scope holds it
	// (routing is scoped: billing's own sidecar gets only auth's route).
	caller, _, _ := spSidecar(t, ts, "c-1", "checkout", "v1", []string{"billing"})
	if err := caller.WaitRouting(ctx, func(r *pb.Routing) bool {
		for _, s := range r.Services {
			if s.Service == "billing" {
				return s.DefaultVersion == "v2"
			}
		}
		return false
	}); err != nil {
		t.Fatalf("billing's route after it came back: %v (table %v), want v2", err, caller.Routing())
	}
}

// What was forgotten stays forgotten across a restart: its records are
// gone from etcd.
func TestForgottenStaysForgottenAfterRestart(t *testing.T) {
	ts := servertest.Start(t, "", withForgetAfter(forgetAfter))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spSidecar(t, ts, "p-1", "portal", "v1", nil)
	b1, _, _ := spSidecar(t, ts, "b-1", "billing", "v1", []string{"ledger"})
	if _, err := b1.Deregister(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*forgetAfter+5*time.Second, "billing and ledger to be forgotten", func() bool {
		s, _ := graphOf(t, ts)
		return slices.Equal(s, []string{"portal"})
	})
	dir := ts.Dir
	ts.Stop()
	ts = servertest.Start(t, dir, withForgetAfter(time.Hour))
	if s, edges := graphOf(t, ts); !slices.Equal(s, []string{"portal"}) || len(edges) != 0 {
		t.Fatalf("graph after restart: %v %v, want only portal", s, edges)
	}
}

// Finished updates are kept per the retention: the newest N per service,
// none older than the maximum age.
func TestUpdateRetention(t *testing.T) {
	const maxAge = 4 * time.Second
	ts := servertest.Start(t, "", func(c *server.Config) {
		c.Coordinator.UpdateRetention = 2
		c.Coordinator.UpdateMaxAge = maxAge
		c.Coordinator.ForgetAfter = 200 * time.Millisecond // sweeps every 100 ms
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spSidecar(t, ts, "a-1", "auth", "v1", nil)
	spSidecar(t, ts, "a-2", "auth", "v2", nil)
	var ids []string
	for i, to := range []string{"v2", "v1", "v2"} {
		u, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "auth", ToVersion: to, Strategy: pb.Strategy_STRATEGY_WF})
		if err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
		servertest.Eventually(t, spWait, "update "+u.Id+" to finish", func() bool {
			return getUpdate(t, ts, u.Id).Phase == pb.Phase_PHASE_DONE
		})
		ids = append(ids, u.Id)
	}
	list := func() []string {
		resp, err := ts.Admin.ListUpdates(ctx, &pb.ListUpdatesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, u := range resp.Updates {
			out = append(out, u.Id)
		}
		slices.Sort(out)
		return out
	}
	stored := func() int {
		st, err := ts.Store().Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(st.Updates)
	}
	newest := slices.Sorted(slices.Values(ids[1:]))
	servertest.Eventually(t, 10*time.Second, "the oldest update to be deleted", func() bool {
		return slices.Equal(list(), newest) && stored() == 2
	})
	servertest.Eventually(t, maxAge+10*time.Second, "every update past the maximum age to be deleted", func() bool {
		return len(list()) == 0 && stored() == 0
	})
	if got := ts.Metric(`coordinator_forgotten_total{kind="update"}`); got != 3 {
		t.Errorf("updates deleted = %v, want 3", got)
	}
	// The service is still updatable: its route and versions stayed.
	if _, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "auth", ToVersion: "v1", Strategy: pb.Strategy_STRATEGY_WF}); err != nil {
		t.Fatalf("update after the history went: %v", err)
	}
}
