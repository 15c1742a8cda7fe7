package main

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/sidecar"
)

// A request that enters with a lane's tag runs in the lane across an
// application that copies only HeaderTxn and HeaderSub to its calls: the
// outbound leg restores the lane header the inbound leg kept, so the call
// to b goes to the lane's b@v2 (the default is v1); the application also
// gets the lane header itself. Nothing is kept after the request.
func TestLaneCarriedAcrossTheApplication(t *testing.T) {
	ts := servertest.Start(t, "")
	var mu sync.Mutex
	served := map[string]int{}
	for _, v := range []string{"v1", "v2"} {
		startProxy(t, ts, "b", v, serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			served[v]++
			mu.Unlock()
		})), nil)
	}
	var depB string
	var laneSeen []string
	a := startProxy(t, ts, "a", "v1", serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		laneSeen = append(laneSeen, r.Header.Get(sidecar.HeaderLane))
		mu.Unlock()
		callDep(w, r, depB, nil)
	})), []dependency{{Service: "b", Listen: "127.0.0.1:0"}})
	depB = a.listenerAddr("dep-b")
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if _, err := ts.Admin.CreateLane(ctx, &pb.CreateLaneRequest{Lane: &pb.Lane{Name: "gray", Members: []*pb.ServiceVersion{{Service: "b", Version: "v2"}}}}); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, within, "a's sidecar to get the lane", func() bool {
		tctx, txn := a.client.BeginFrom(ctx, func(h string) string { return map[string]string{"x-lane": "gray"}[h] })
		_ = a.client.End(tctx)
		name, _ := txn.Lane()
		return name == "gray"
	})
	for _, tag := range []string{"gray", "", "gray"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.listenerAddr("inbound")+"/", nil)
		if tag != "" {
			req.Header.Set("x-lane", tag)
		}
		resp, err := clientFor(1).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request: %s", resp.Status)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if served["v2"] != 2 || served["v1"] != 1 {
		t.Errorf("b served %v: want the two tagged requests on v2 (the lane), the other on v1", served)
	}
	if len(laneSeen) != 3 || laneSeen[0] != "gray;b=v2" || laneSeen[1] != "" {
		t.Errorf("the application got lane headers %q", laneSeen)
	}
	a.lanes.mu.Lock()
	defer a.lanes.mu.Unlock()
	if n := len(a.lanes.live); n != 0 {
		t.Fatalf("%d lanes kept after their requests ended", n)
	}
}
