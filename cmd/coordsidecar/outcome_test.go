package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/mesh/istio"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// failingMesh is a mesh for b whose v2 answers 500 to every fifth call.
type failingMesh struct{ n atomic.Int64 }

func (m *failingMesh) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v, ok := istio.ParseHeader("b", r.Header.Get(istio.Header))
	if !ok {
		v = "v1"
	}
	w.Header().Set(istio.Header, istio.HeaderValue("b", v))
	if v == "v2" && m.n.Add(1)%5 == 0 {
		http.Error(w, "v2 fails", http.StatusInternalServerError)
		return
	}
	fmt.Fprint(w, v)
}

// coordsidecar reports each decided call's outcome (in istio mode, where
// it stamps the version and the mesh routes): a canary of b whose v2 fails
// a fifth of its calls is aborted by the coordinator's analysis.
func TestProxyReportsOutcomesToCanaryAnalysis(t *testing.T) {
	ts := servertest.Start(t, "")
	meshAddr := serveApp(t, &failingMesh{})
	startProxy(t, ts, "b", "v1", serveApp(t, &echoApp{}), nil)
	startProxy(t, ts, "b", "v2", serveApp(t, &echoApp{}), nil)
	caller := &callerApp{paused: make(chan string, 1), resume: make(chan struct{})}
	a := startProxy(t, ts, "a", "v1", serveApp(t, caller), []dependency{{Service: "b", Listen: "127.0.0.1:0", Host: meshAddr}},
		func(c *config) { c.EntryPoint, c.Mode = true, modeIstio })
	depB := a.listenerAddr("dep-b")
	caller.depB.Store(&depB)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	u, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "b", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV,
		CanarySteps: []uint32{50, 100}, MaxErrorRate: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	get := func() *pb.Update {
		g, err := ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	servertest.Eventually(t, within, "CANARY", func() bool { return get().Phase == pb.Phase_PHASE_CANARY })
	for i := 0; i < 300 && get().Phase == pb.Phase_PHASE_CANARY; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.listenerAddr("inbound")+"/work", nil)
		resp, err := clientFor(1).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	servertest.Eventually(t, within, "the analysis to abort", func() bool { return get().Phase == pb.Phase_PHASE_ABORTED })
	if g := get(); !strings.HasPrefix(g.Reason, "analysis: error rate of the new version") {
		t.Fatalf("reason %q", g.Reason)
	}
}
