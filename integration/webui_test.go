package integration

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// TestWebView loads coordinatord's /ui/ in headless Chromium while a WF
// update waits on a transaction and then finishes: the page shows the
// services, the blocking transactions the REST API reports, and the
// update's phase advancing without a reload. Screenshots are saved before
// and during the update (and after it), under the test's temporary
// directory or COORDINATOR_WEBUI_SCREENSHOTS if set. The page is pushed
// the state (GET /v1/state:watch): it says it is live, and it makes no
// other REST request while it watches (no polling).
func TestWebView(t *testing.T) {
	if testing.Short() {
		t.Skip("runs headless Chromium")
	}
	bin := findChromium(t)
	shots := os.Getenv("COORDINATOR_WEBUI_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}

	// Every REST request the page (or this test) makes, by path.
	var restMu sync.Mutex
	rest := map[string]int{}
	restCounts := func() map[string]int {
		restMu.Lock()
		defer restMu.Unlock()
		return maps.Clone(rest)
	}
	ts := servertest.Start(t, "", func(cfg *server.Config) {
		cfg.RESTMiddleware = func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				restMu.Lock()
				rest[r.Method+" "+r.URL.Path]++
				restMu.Unlock()
				next.ServeHTTP(w, r)
			})
		}
	})
	portal := ts.LongSidecar("portal-1", "portal", "v1", "auth-service")
	ts.LongSidecar("auth-1", "auth-service", "v1", "db")
	ts.LongSidecar("auth-2", "auth-service", "v2", "db")
	ts.LongSidecar("db-1", "db", "v1")
	// t1 used auth-service@v1 and may call it again: auth-service is
	// blocked until t1 ends.
	t1 := servertest.TxnID(1)
	servertest.Send(t, portal, simsidecar.Begin(t1, 1), simsidecar.Call(t1, 1, "auth-service", 2), simsidecar.Return(t1, 2))
	if f := ts.FreeREST("auth-service"); f.Free {
		t.Fatalf("auth-service is free while t1 runs: %+v", f)
	}

	page := startChromium(t, bin, "http://"+ts.HTTPAddr()+"/ui/")
	page.waitFor(60*time.Second, "the graph drawn",
		`document.body.dataset.snapshots >= 1 && !!document.querySelector('g.node[data-service="auth-service"]')`)
	// A mark that a reload would wipe.
	page.mustEval(`window.__loadedOnce = "yes"`, nil)

	// The services, with their versions.
	var nodes map[string]string
	page.mustEval(`Object.fromEntries([...document.querySelectorAll("g.node")].map(g => [g.dataset.service, g.textContent]))`, &nodes)
	for svc, want := range map[string][]string{
		"portal": {"default v1", "no other version"}, "auth-service": {"default v1", "other: v2", "blocked by 1 transaction"},
		"db": {"default v1"},
	} {
		for _, w := range want {
			if !strings.Contains(nodes[svc], w) {
				t.Fatalf("node %s: %q lacks %q (nodes %v)", svc, nodes[svc], w, nodes)
			}
		}
	}
	var edges []string
	page.mustEval(`[...document.querySelectorAll("path.edge")].map(e => e.dataset.from + ">" + e.dataset.to).sort()`, &edges)
	if !slices.Equal(edges, []string{"auth-service>db", "portal>auth-service"}) {
		t.Fatalf("edges drawn: %v", edges)
	}
	var cluster pb.Cluster
	ts.REST("/v1/cluster", &cluster)
	page.waitFor(10*time.Second, "the leader "+cluster.GetLeader().GetName(),
		fmt.Sprintf(`document.getElementById("leader").textContent.includes(%q)`, cluster.GetLeader().GetName()))
	var clusterText string
	page.mustEval(`document.getElementById("cluster").textContent`, &clusterText)
	if strings.Contains(clusterText, "null") || strings.Contains(clusterText, "undefined") {
		t.Fatalf("the cluster section: %q", clusterText)
	}
	// The rest of the cluster as REST has it: every replica, every etcd
	// member, and self-preservation's state.
	var names []string
	for _, r := range cluster.GetReplicas() {
		names = append(names, r.GetName())
	}
	for _, m := range cluster.GetMembers() {
		names = append(names, m.GetName())
	}
	if len(cluster.GetReplicas()) == 0 || len(cluster.GetMembers()) == 0 {
		t.Fatalf("REST /v1/cluster lists no replica or no etcd member: %v", &cluster)
	}
	for _, n := range names {
		page.waitFor(10*time.Second, "the cluster section to name "+n,
			fmt.Sprintf(`document.getElementById("cluster").textContent.includes(%q)`, n))
	}
	var sp pb.SelfPreservation
	ts.REST("/v1/selfpreservation", &sp)
	var spState string
	page.mustEval(`document.getElementById("sp-state").textContent`, &spState)
	if sp.GetActive() || spState != "inactive" {
		t.Fatalf("self-preservation: REST active=%v, the page says %q", sp.GetActive(), spState)
	}
	page.waitFor(10*time.Second, "the live indicator",
		`document.body.dataset.stream === "live" && document.getElementById("status").textContent.startsWith("live")`)
	page.screenshot(shots, "before-update")

	// The page is pushed the state: over a few seconds it makes no request
	// to /v1/, not even to reopen its stream, which stays open.
	before := restCounts()
	if before["GET /v1/state:watch"] < 1 {
		t.Fatalf("the page never opened its stream: REST requests %v", before)
	}
	time.Sleep(4 * time.Second)
	if after := restCounts(); !maps.Equal(before, after) {
		t.Fatalf("the page made REST requests while nothing changed (polling?): before %v, after %v", before, after)
	}
	var live string
	page.mustEval(`document.body.dataset.stream`, &live)
	if live != "live" {
		t.Fatalf("the indicator says %q after a quiet while, want live", live)
	}
	seenBefore := restCounts()

	// A WF update of auth-service waits for t1.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "auth-service", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_WF})
	if err != nil {
		t.Fatal(err)
	}
	id := st.GetId()
	phaseExpr := fmt.Sprintf(`((document.querySelector('tr[data-update=%q] td.phase') || {dataset: {}}).dataset.phase || "")`, id)
	page.waitFor(30*time.Second, "update "+id+" waiting", phaseExpr+` === "WAITING"`)
	var during string
	page.mustEval(phaseExpr, &during)

	// The blocking transactions shown (on the node, in its tooltip, and in
	// the detail a click opens) are the REST API's.
	free := ts.FreeREST("auth-service")
	var want []string
	for _, b := range free.GetBlockers() {
		want = append(want, b.GetTxnId())
	}
	slices.Sort(want)
	if len(want) == 0 || !slices.Contains(want, t1) {
		t.Fatalf("REST freeness of auth-service: %+v", free)
	}
	page.mustEval(`document.querySelector('g.node[data-service="auth-service"]').dispatchEvent(new MouseEvent("click", {bubbles: true}))`, nil)
	page.waitFor(10*time.Second, "the detail of auth-service", `!!document.querySelector('#blockers[data-service="auth-service"]')`)
	var shown struct {
		Node, Detail []string
		Title        string
	}
	page.mustEval(`(() => {
		const g = document.querySelector('g.node[data-service="auth-service"]');
		return {Node: g.dataset.blocking.split(" ").filter(Boolean).sort(),
			Detail: [...document.querySelectorAll("#blockers li.blocker")].map(li => li.dataset.txn).sort(),
			Title: g.querySelector("title").textContent};
	})()`, &shown)
	if !slices.Equal(shown.Node, want) || !slices.Equal(shown.Detail, want) {
		t.Fatalf("blocking transactions of auth-service: node %v, detail %v; REST %v", shown.Node, shown.Detail, want)
	}
	for _, id := range want {
		if !strings.Contains(shown.Title, id) {
			t.Fatalf("the tooltip of auth-service lacks %s: %q", id, shown.Title)
		}
	}
	// The detail counts each version's instances and transactions, in
	// words that agree with the numbers.
	var during2 string
	page.mustEval(`document.getElementById("detail").textContent`, &during2)
	for _, w := range []string{"auth-service — blocked by 1 transaction", "v1 (default): 1 instance, 1 connected, 1 live transaction",
		"v2: 1 instance, 1 connected, 0 live transactions"} {
		if !strings.Contains(during2, w) {
			t.Fatalf("the detail of auth-service during the update lacks %q: %q", w, during2)
		}
	}
	page.screenshot(shots, "during-update")

	// t1 ends: the update finishes, and the page shows it without a reload.
	servertest.Send(t, portal, simsidecar.End(t1))
	page.waitFor(60*time.Second, "update "+id+" done", phaseExpr+` === "DONE"`)
	var mark string
	page.mustEval(`window.__loadedOnce || ""`, &mark)
	if mark != "yes" {
		t.Fatal("the page was reloaded")
	}
	// Through the update, the page's only REST traffic was its stream,
	// opened once and still open (the test's own calls are not the page's).
	for k, n := range restCounts() {
		if k == "GET /v1/state:watch" && n != seenBefore[k] {
			t.Errorf("the page reopened its stream during the update: %d, then %d", seenBefore[k], n)
		}
	}
	var u pb.Update
	if ts.REST("/v1/updates/"+id, &u); u.GetPhase() != pb.Phase_PHASE_DONE {
		t.Fatalf("REST says update %s is %v", id, u.GetPhase())
	}
	page.waitFor(10*time.Second, "auth-service free on v2",
		`(g => g && g.dataset.free === "true" && g.textContent.includes("default v2"))(document.querySelector('g.node[data-service="auth-service"]'))`)
	var detail string
	page.mustEval(`document.getElementById("detail").textContent`, &detail)
	if strings.Contains(detail, "null") || strings.Contains(detail, "undefined") || !strings.Contains(detail, "Last update: "+id) {
		t.Fatalf("the detail of auth-service after the update: %q", detail)
	}
	t.Logf("update %s: page showed %s, then DONE, without a reload", id, during)
	page.screenshot(shots, "after-update")
}

// TestWebViewReconnects: the replica ends each state stream after
// StateWatchDuration; the page opens a new one at once, stays live, and
// shows what changed after the reconnection without a reload.
func TestWebViewReconnects(t *testing.T) {
	if testing.Short() {
		t.Skip("runs headless Chromium")
	}
	bin := findChromium(t)
	var watches atomic.Int32
	ts := servertest.Start(t, "", func(cfg *server.Config) {
		cfg.StateWatchDuration = 1500 * time.Millisecond
		cfg.RESTMiddleware = func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v1/state:watch" {
					watches.Add(1)
				}
				next.ServeHTTP(w, r)
			})
		}
	})
	ts.LongSidecar("a-1", "a", "v1")
	page := startChromium(t, bin, "http://"+ts.HTTPAddr()+"/ui/")
	page.waitFor(30*time.Second, "service a drawn, live",
		`document.body.dataset.stream === "live" && !!document.querySelector('g.node[data-service="a"]')`)
	page.mustEval(`window.__loadedOnce = "yes"`, nil)
	servertest.Eventually(t, 20*time.Second, "three streams opened", func() bool { return watches.Load() >= 3 })
	ts.LongSidecar("b-1", "b", "v1")
	page.waitFor(10*time.Second, "service b drawn, live",
		`document.body.dataset.stream === "live" && !!document.querySelector('g.node[data-service="b"]')`)
	var mark string
	if page.mustEval(`window.__loadedOnce || ""`, &mark); mark != "yes" {
		t.Fatal("the page was reloaded")
	}
	if n := watches.Load(); n > 20 {
		t.Errorf("%d streams opened: the page reconnects too eagerly", n)
	}
}
