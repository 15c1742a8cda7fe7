package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/sidecar"
)

// callerApp is an application that knows nothing of the coordinator: on
// each request it calls b twice through its coordsidecar's listener for b,
// copying the mesh headers and tracing headers (traceparent, B3) of the
// request, as the README asks. With ?pause=1 it stops between the two calls until told to go.
type callerApp struct {
	depB   atomic.Pointer[string]
	paused chan string // the transaction id of a paused request
	resume chan struct{}
}

func (a *callerApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	call := func() (string, error) {
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+*a.depB.Load()+"/version", nil)
		if err != nil {
			return "", err
		}
		for _, h := range []string{sidecar.HeaderTxn, sidecar.HeaderSub, sidecar.HeaderTraceparent, sidecar.HeaderB3TraceID, sidecar.HeaderB3SpanID} {
			if v := r.Header.Get(h); v != "" {
				req.Header.Set(h, v)
			}
		}
		resp, err := clientFor(1).Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("b answered %s: %s", resp.Status, b)
		}
		return string(b), err
	}
	first, err := call()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if r.URL.Query().Get("pause") != "" {
		a.paused <- r.Header.Get(sidecar.HeaderTxn)
		<-a.resume
	}
	second, err := call()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	fmt.Fprintf(w, "%s,%s", first, second)
}

// versionApps are the versions of b: each answers its version and records,
// per transaction, the versions that served it and the traceparent it got.
type versionApps struct {
	mu       sync.Mutex
	versions map[string][]string // txn -> versions
	trace    map[string][]string // txn -> traceparents
	b3       map[string][]string // txn -> "trace id/span id"
}

func (v *versionApps) app(version string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(sidecar.HeaderTxn)
		v.mu.Lock()
		v.versions[id] = append(v.versions[id], version)
		v.trace[id] = append(v.trace[id], r.Header.Get(sidecar.HeaderTraceparent))
		v.b3[id] = append(v.b3[id], r.Header.Get(sidecar.HeaderB3TraceID)+"/"+r.Header.Get(sidecar.HeaderB3SpanID))
		v.mu.Unlock()
		fmt.Fprint(w, version)
	})
}

func (v *versionApps) seen(id string) (versions, traces []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.versions[id]), slices.Clone(v.trace[id])
}

// A two-hop chain, a's coordsidecar -> b's coordsidecar -> b's application,
// with applications that do not link the SDK, during a CV update of b from
// v1 to v2. A request from outside (a is an entry point: a forged mesh
// header is stripped) starts a root at a, whose events reach the
// coordinator; b joins it on the mesh headers; the outside traceparent is
// propagated as correlation. The request that used b@v1 before the switch
// stays on v1 after it (its second call goes to v1), a request begun after
// the switch runs on v2 only, and the update completes once the first ends.
func TestChainFollowsCVUpdate(t *testing.T) {
	ts := servertest.Start(t, "")
	bApps := &versionApps{versions: map[string][]string{}, trace: map[string][]string{}, b3: map[string][]string{}}
	startProxy(t, ts, "b", "v1", serveApp(t, bApps.app("v1")), nil)
	caller := &callerApp{paused: make(chan string, 1), resume: make(chan struct{})}
	a := startProxy(t, ts, "a", "v1", serveApp(t, caller), []dependency{{Service: "b", Listen: "127.0.0.1:0"}},
		func(c *config) { c.EntryPoint = true })
	depB := a.listenerAddr("dep-b")
	caller.depB.Store(&depB)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()

	const outsideTrace = "0af7651916cd43dd8448eb211c80319c"
	request := func(query string, h map[string]string) <-chan string {
		out := make(chan string, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.listenerAddr("inbound")+"/work"+query, nil)
			for k, v := range h {
				req.Header.Set(k, v)
			}
			resp, err := clientFor(1).Do(req)
			if err != nil {
				out <- err.Error()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			out <- resp.Status + " " + string(b)
		}()
		return out
	}
	spanning := request("?pause=1", map[string]string{
		sidecar.HeaderTraceparent: "00-" + outsideTrace + "-b7ad6b7169203331-01",
		sidecar.HeaderTxn:         "forged-by-a-client", sidecar.HeaderSub: "00000000000000aa",
	})
	var id string
	select {
	case id = <-caller.paused:
	case <-ctx.Done():
		t.Fatal("the request never reached a's application")
	}
	if !txnIDRe.MatchString(id) {
		t.Fatalf("a's application got transaction %q: want a new root's id, not the forged one", id)
	}
	// The root's events (BEGIN at a, CALL and RETURN to b@v1) reached the
	// coordinator: a is running it, it used b@v1.
	servertest.Eventually(t, within, "the root at the coordinator", func() bool {
		for _, x := range ts.Txns("").Transactions {
			if x.TxnId == id {
				return x.Entry == "a" && x.Owner == a.instanceID && slices.ContainsFunc(x.Used, func(u *pb.ServiceVersion) bool {
					return u.Service == "b" && u.Version == "v1"
				}) && len(x.Running) == 1 && x.Running[0].Service == "a"
			}
		}
		return false
	})

	startProxy(t, ts, "b", "v2", serveApp(t, bApps.app("v2")), nil)
	phase := startCVOfB(ctx, t, ts)
	if got := <-request("", nil); got != "200 OK v2,v2" {
		t.Fatalf("a request begun after the switch: %q, want 200 OK v2,v2", got)
	}
	close(caller.resume)
	if got := <-spanning; got != "200 OK v1,v1" {
		t.Fatalf("the request spanning the switch: %q, want 200 OK v1,v1 (pinned to the version it used)", got)
	}
	servertest.Eventually(t, within, "the update to finish", func() bool { return phase() == pb.Phase_PHASE_DONE })
	servertest.Eventually(t, within, "every transaction to end", func() bool { return ts.Txns("").Total == 0 })

	// b joined the root on the mesh headers (it saw a's transaction id),
	// and got the outside trace, continued.
	versions, traces := bApps.seen(id)
	if !slices.Equal(versions, []string{"v1", "v1"}) {
		t.Fatalf("b served the spanning transaction on %v, want v1 twice", versions)
	}
	for _, tp := range traces {
		if !strings.HasPrefix(tp, "00-"+outsideTrace+"-") || tp == "00-"+outsideTrace+"-b7ad6b7169203331-01" {
			t.Fatalf("b got traceparent %q: want the outside trace %s with a new span", tp, outsideTrace)
		}
	}

	// B3 headers from outside are carried on the same way.
	const b3Trace, b3Span = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"
	if got := <-request("", map[string]string{sidecar.HeaderB3TraceID: b3Trace, sidecar.HeaderB3SpanID: b3Span}); got != "200 OK v2,v2" {
		t.Fatalf("a request with B3 headers: %q", got)
	}
	bApps.mu.Lock()
	defer bApps.mu.Unlock()
	b3Seen := 0
	for other, ids := range bApps.b3 {
		if other == id || !strings.Contains(ids[0], b3Trace) {
			continue
		}
		b3Seen++
		for _, s := range ids {
			if trace, span, _ := strings.Cut(s, "/"); trace != b3Trace || !subRe.MatchString(span) || span == b3Span {
				t.Fatalf("b got B3 %q: want the outside trace %s with a new span", s, b3Trace)
			}
		}
		delete(bApps.versions, other)
	}
	if b3Seen != 1 {
		t.Fatalf("b saw the outside B3 trace in %d transactions, want 1: %v", b3Seen, bApps.b3)
	}
	if len(bApps.versions) != 2 {
		t.Fatalf("b served transactions %v, want two", bApps.versions)
	}
	for other, vs := range bApps.versions {
		if other == id {
			continue
		}
		if !slices.Equal(vs, []string{"v2", "v2"}) {
			t.Fatalf("the request after the switch ran on b %v, want v2 twice", vs)
		}
		// No outside trace: the traceparent names the transaction.
		for _, tp := range bApps.trace[other] {
			if !strings.HasPrefix(tp, "00-"+other+"-") {
				t.Fatalf("b got traceparent %q for transaction %s with no outside trace", tp, other)
			}
		}
	}
}

// startCVOfB starts a CV update of b to v2, waits for its switch, and
// returns how to read its phase.
func startCVOfB(ctx context.Context, t *testing.T, ts *servertest.Server) (phase func() pb.Phase) {
	t.Helper()
	u, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "b", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV})
	if err != nil {
		t.Fatal(err)
	}
	phase = func() pb.Phase {
		g, err := ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		if err != nil {
			t.Fatal(err)
		}
		return g.Phase
	}
	servertest.Eventually(t, within, "the switch", func() bool { return phase() == pb.Phase_PHASE_DRAINING })
	return phase
}
