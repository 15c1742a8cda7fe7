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
	"time"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/mesh/istio"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/sidecar"
)

// fakeMesh stands for Envoy with the rendered manifests applied, for
// service b: a request whose x-version names a version of b goes to it,
// any other to def; the response names the version in x-version. It
// records what each transaction's requests carried.
type fakeMesh struct {
	def   atomic.Pointer[string]
	mu    sync.Mutex
	stamp map[string][]string // txn -> x-version of each request ("" if none)
	hosts []string
}

func (m *fakeMesh) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, stamp := r.Header.Get(sidecar.HeaderTxn), r.Header.Get(istio.Header)
	m.mu.Lock()
	m.stamp[id] = append(m.stamp[id], stamp)
	m.hosts = append(m.hosts, r.Host)
	m.mu.Unlock()
	v, ok := istio.ParseHeader("b", stamp)
	if !ok {
		v = *m.def.Load()
	}
	w.Header().Set(istio.Header, istio.HeaderValue("b", v))
	fmt.Fprint(w, v)
}

func (m *fakeMesh) setDefault(v string) { m.def.Store(&v) }

func (m *fakeMesh) stamps(id string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.stamp[id])
}

// Istio mode with real HTTP servers on loopback: a's coordsidecar sends
// its calls to b to the mesh's host for b (not to an endpoint of b),
// with the mesh headers, and stamps x-version as the seed does: not on a
// transaction's first call to b in steady state, then the version the
// first response named. The coordinator still gets every CALL (the
// transaction used b@v1). During a CV update the coordinator decides each
// call, and the decision is stamped: a new transaction's first call
// carries b-v2, the transaction pinned before the switch carries b-v1.
// A mesh that routes elsewhere than the coordinator decided is counted.
func TestIstioModeStampsTheVersion(t *testing.T) {
	ts := servertest.Start(t, "")
	mesh := &fakeMesh{stamp: map[string][]string{}}
	mesh.setDefault("v1")
	meshAddr := serveApp(t, mesh)
	bApp := &echoApp{}
	startProxy(t, ts, "b", "v1", serveApp(t, bApp), nil)
	caller := &callerApp{paused: make(chan string, 1), resume: make(chan struct{})}
	a := startProxy(t, ts, "a", "v1", serveApp(t, caller), []dependency{{Service: "b", Listen: "127.0.0.1:0", Host: meshAddr}},
		func(c *config) { c.EntryPoint, c.Mode = true, modeIstio })
	depB := a.listenerAddr("dep-b")
	caller.depB.Store(&depB)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	request := func(query string) <-chan string {
		out := make(chan string, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.listenerAddr("inbound")+"/work"+query, nil)
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

	// Steady state: the first call unstamped, the second stamped with what
	// the first response named.
	if got := <-request(""); got != "200 OK v1,v1" {
		t.Fatalf("a request in steady state: %q", got)
	}
	var first string
	for id := range mesh.stamp {
		first = id
	}
	if s := mesh.stamps(first); !txnIDRe.MatchString(first) || !slices.Equal(s, []string{"", "b-v1"}) {
		t.Fatalf("transaction %q carried x-version %q, want none then b-v1", first, s)
	}
	if len(bApp.seen) != 0 {
		t.Fatalf("b's endpoint got %d calls: istio mode must leave the endpoint to the mesh", len(bApp.seen))
	}
	mesh.mu.Lock()
	hosts := slices.Clone(mesh.hosts)
	mesh.mu.Unlock()
	if hosts[0] != meshAddr {
		t.Fatalf("the mesh got Host %q, want the service host %q", hosts[0], meshAddr)
	}

	// A transaction that used b@v1 before the update, paused across the
	// switch: the coordinator knows it used b@v1 (the CALL was reported).
	spanning := request("?pause=1")
	var id string
	select {
	case id = <-caller.paused:
	case <-ctx.Done():
		t.Fatal("the request never reached a's application")
	}
	servertest.Eventually(t, within, "the coordinator to see the transaction use b@v1", func() bool {
		for _, x := range ts.Txns("").Transactions {
			if x.TxnId == id {
				return slices.ContainsFunc(x.Used, func(u *pb.ServiceVersion) bool { return u.Service == "b" && u.Version == "v1" })
			}
		}
		return false
	})

	startProxy(t, ts, "b", "v2", serveApp(t, &echoApp{}), nil)
	phase := startCVOfB(ctx, t, ts)
	mesh.setDefault("v2") // the manifests rendered at DRAINING

	// A new transaction: decided by the coordinator, stamped b-v2 from its
	// first call.
	if got := <-request(""); got != "200 OK v2,v2" {
		t.Fatalf("a request begun after the switch: %q", got)
	}
	var second string
	mesh.mu.Lock()
	for x := range mesh.stamp {
		if x != first && x != id {
			second = x
		}
	}
	mesh.mu.Unlock()
	if s := mesh.stamps(second); !slices.Equal(s, []string{"b-v2", "b-v2"}) {
		t.Fatalf("a transaction begun after the switch carried %q, want b-v2 twice", s)
	}

	// The pinned one goes on on v1, stamped.
	caller.resume <- struct{}{}
	if got := <-spanning; got != "200 OK v1,v1" {
		t.Fatalf("the transaction that used v1 before the switch: %q", got)
	}
	if s := mesh.stamps(id); !slices.Equal(s, []string{"", "b-v1"}) {
		t.Fatalf("the spanning transaction carried %q, want none then b-v1", s)
	}
	servertest.Eventually(t, within, "the update to finish", func() bool { return phase() == pb.Phase_PHASE_DONE })

	// Stale manifests (the mesh still sends new transactions to v1): the
	// calls still go where the mesh says, and each is counted.
	mesh.setDefault("v1")
	if got := <-request(""); got != "200 OK v1,v1" {
		t.Fatalf("a request through a stale mesh: %q", got)
	}
	resp, err := clientFor(1).Get("http://" + a.listenerAddr("admin") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), "coordsidecar_istio_version_mismatch_total 2") {
		t.Errorf("/metrics lacks 2 mismatches:\n%s", grepLines(string(metrics), "istio"))
	}
	servertest.Eventually(t, within, "every transaction to end", func() bool { return ts.Txns("").Total == 0 })
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// The memory of used versions is bounded: a generation is dropped after
// pinTTL, and a lookup keeps an entry alive into the next generation.
func TestPinsForgetOldTransactions(t *testing.T) {
	now := time.Now()
	p := newPins()
	p.now, p.since = func() time.Time { return now }, now
	p.put("T", "b", "v1")
	p.put("U", "b", "v2")
	now = now.Add(pinTTL)
	if p.get("T", "b") != "v1" { // rotates: T moves to the new generation
		t.Fatal("T forgotten after one generation")
	}
	now = now.Add(pinTTL)
	if p.get("T", "b") != "v1" || p.get("U", "b") != "" {
		t.Fatalf("after two generations: T %q, U %q; want T kept (looked up), U gone", p.get("T", "b"), p.get("U", "b"))
	}
}
