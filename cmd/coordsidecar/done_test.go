package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/sidecar"
)

// An application's "done" hint (x-coordinator-done on an outbound call)
// reaches the coordinator once the call has returned, as the SDK's
// sidecar.Done does: a transaction that has used b and will not call it
// again no longer blocks b's freeness. Without the hint it does. The
// header is the proxy's: b's application never sees it.
func TestDoneHintFreesTheService(t *testing.T) {
	ts := servertest.Start(t, "")
	var hintSeen atomic.Bool
	startProxy(t, ts, "b", "v1", serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(headerDone) != "" {
			hintSeen.Store(true)
		}
		fmt.Fprint(w, "v1")
	})), nil)
	var depB atomic.Pointer[string]
	paused, resume := make(chan string, 1), make(chan struct{})
	a := startProxy(t, ts, "a", "v1", serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		extra := http.Header{}
		if h := r.URL.Query().Get("done"); h != "" {
			extra.Set(headerDone, h)
		}
		if !callDep(w, r, *depB.Load(), extra) {
			return
		}
		paused <- r.Header.Get(sidecar.HeaderTxn)
		<-resume
		fmt.Fprint(w, "ok")
	})), []dependency{{Service: "b", Listen: "127.0.0.1:0"}}, func(c *config) { c.EntryPoint = true })
	addr := a.listenerAddr("dep-b")
	depB.Store(&addr)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()

	freeness := func() *pb.Freeness {
		f, err := ts.Admin.GetFreeness(ctx, &pb.GetFreenessRequest{Service: "b"})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, c := range []struct {
		query string
		free  bool
	}{{"", false}, {"?done=other,+b", true}} {
		done := make(chan error, 1)
		go func() {
			code, body, err := getBody(ctx, "http://"+a.listenerAddr("inbound")+"/"+c.query)
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("%d %s", code, body)
			}
			done <- err
		}()
		var id string
		select {
		case id = <-paused:
		case <-ctx.Done():
			t.Fatal("a's application never called b")
		}
		servertest.Eventually(t, within, "the call's return at the coordinator", func() bool {
			for _, x := range ts.Txns("").Transactions {
				if x.TxnId == id {
					return slices.ContainsFunc(x.Used, func(u *pb.ServiceVersion) bool { return u.Service == "b" })
				}
			}
			return false
		})
		if c.free {
			servertest.Eventually(t, within, "b free after the hint", func() bool { return freeness().Free })
		} else if f := freeness(); f.Free || f.Blocking != 1 {
			t.Fatalf("b without the hint: %v, want blocked by the live transaction", f)
		}
		resume <- struct{}{}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		servertest.Eventually(t, within, "the transaction to end", func() bool { return ts.Txns("").Total == 0 })
	}
	if hintSeen.Load() {
		t.Fatalf("b's application got %s: the proxy must take it off the call", headerDone)
	}
}
