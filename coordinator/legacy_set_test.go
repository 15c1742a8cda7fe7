package coordinator_test

import (
	"context"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/etcdgate"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// A transaction T's first call to a member of a CV set (d, after the
// switch: d@v2) is applied and written behind with T's record, but its pin
// is still on its way to etcd (held here) when the leader dies; the answer
// was never sent. The new leader, which restores T as legacy from its
// record, must put T on the new side for the whole set: T's call to the
// other member (c) goes to c@v2, not to the old side a legacy transaction
// with no pin would get (a mixed set: d@v2 and c@v1).
func TestLegacySetSideFromRecord(t *testing.T) {
	var mu sync.Mutex
	var gates []*etcdgate.KV
	gatePins := func(c *server.Config) {
		c.WrapKV = func(kv clientv3.KV) clientv3.KV {
			g := etcdgate.New(kv, storage.Keys{Prefix: c.Coordinator.Prefix}.Pins())
			mu.Lock()
			gates = append(gates, g)
			mu.Unlock()
			return g
		}
	}
	each := func(f func(*etcdgate.KV)) {
		mu.Lock()
		defer mu.Unlock()
		for _, g := range gates {
			f(g)
		}
	}
	cl := servertest.StartCluster(t, 2, spFailoverOpts(0), gatePins)
	a := cl.Leader(spWait)
	deps := []string{"c", "d"}
	for _, sv := range [][2]string{{"c", "v1"}, {"c", "v2"}, {"d", "v1"}, {"d", "v2"}} {
		spSidecar(t, a, sv[0]+"-"+sv[1], sv[0], sv[1], nil)
	}
	gw, _, stopGW := spSidecar(t, a, "gw-1", "gw", "v1", deps)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// T0 used c@v1 before the update: the old side stays in use, so the
	// update stays DRAINING.
	servertest.Send(t, gw, simsidecar.Begin("T0", 1))
	if v, err := gw.RouteCall(ctx, "T0", 1, "c", 2); err != nil || v != "v1" {
		t.Fatalf("T0 -> c: %s %v", v, err)
	}
	servertest.Send(t, gw, simsidecar.Return("T0", 2))
	u, err := a.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Strategy: pb.Strategy_STRATEGY_CV,
		Members: []*pb.ServiceVersion{{Service: "c", Version: "v2"}, {Service: "d", Version: "v2"}}})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, spWait, "DRAINING", func() bool {
		g, err := a.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		return err == nil && g.Phase == pb.Phase_PHASE_DRAINING
	})

	each((*etcdgate.KV).Hold)
	servertest.Send(t, gw, simsidecar.Begin("T", 10))
	go func() { _, _ = gw.RouteCall(ctx, "T", 10, "d", 11) }() // never answered: its pin is held
	servertest.Eventually(t, spWait, "T's pin at d to wait at the gate", func() bool {
		n := 0
		each(func(g *etcdgate.KV) { n += g.Waiting() })
		return n > 0
	})
	if err := a.Leader().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	stopGW()
	cl.Crash(a)
	each((*etcdgate.KV).Release)

	b := cl.Leader(spWait)
	for _, sv := range [][2]string{{"c", "v1"}, {"c", "v2"}, {"d", "v1"}, {"d", "v2"}} {
		spSidecar(t, b, sv[0]+"-"+sv[1], sv[0], sv[1], nil)
	}
	gw2, _, _ := spSidecar(t, b, "gw-1", "gw", "v1", deps, "T0", "T")
	if v, err := gw2.RouteCall(ctx, "T", 10, "d", 12); err != nil || v != "v2" {
		t.Fatalf("T's call to d, sent again to the new leader: %s %v, want d@v2 (its record)", v, err)
	}
	if v, err := gw2.RouteCall(ctx, "T", 10, "c", 13); err != nil || v != "v2" {
		t.Fatalf("T used d@v2, then was routed to c@%s (%v): a mixed set", v, err)
	}
	if v, err := gw2.RouteCall(ctx, "T0", 1, "d", 14); err != nil || v != "v1" {
		t.Fatalf("T0 used c@v1, then was routed to d@%s (%v): a mixed set", v, err)
	}
}
