package integration

import (
	"net/http"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// TestSeedScenarioEndToEnd replays the seed scenario (DESIGN.md §1) through
// four simulated sidecars and reads free(auth) from the REST API at moments
// A, B, C and D, without and with "done" hints.
func TestSeedScenarioEndToEnd(t *testing.T) {
	ts := servertest.Start(t, "")
	portal := ts.Sidecar("portal-1", "portal", "v1", "auth", "proc")
	proc := ts.Sidecar("proc-1", "proc", "v1", "auth", "db")
	ts.Sidecar("auth-1", "auth", "v1")
	ts.Sidecar("db-1", "db", "v1")

	for _, tc := range []struct {
		name  string
		hints bool
		want  [4]bool // free(auth) at A, B, C, D
	}{
		{"no hints", false, [4]bool{true, false, false, false}},
		{"with hints", true, [4]bool{true, false, false, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			txn := servertest.TxnID(1)
			if tc.hints {
				txn = servertest.TxnID(2)
			}
			check := func(moment string, want bool) {
				t.Helper()
				f := ts.FreeREST("auth")
				if f.Free != want {
					t.Fatalf("moment %s: free(auth) = %v, want %v (blockers %v)", moment, f.Free, want, f.Blockers)
				}
				if !want && (f.Blocking != 1 || len(f.Blockers) != 1 || f.Blockers[0].TxnId != txn) {
					t.Fatalf("moment %s: blockers = %d %v, want exactly %s", moment, f.Blocking, f.Blockers, txn)
				}
			}
			const p0, a1, r1, a2, d1 = 0x10, 0x11, 0x12, 0x13, 0x14
			servertest.Send(t, portal, simsidecar.Begin(txn, p0)) // T0 begun at Portal
			check("A", tc.want[0])
			servertest.Send(t, portal, simsidecar.Call(txn, p0, "auth", a1)) // T1 running on Auth
			check("B", tc.want[1])
			evs := []*pb.Event{simsidecar.Return(txn, a1)} // T1 returned, T2 not started
			if tc.hints {
				evs = append(evs, simsidecar.Done(txn, p0, "auth"))
			}
			servertest.Send(t, portal, evs...)
			check("C", tc.want[2])
			evs = []*pb.Event{simsidecar.Call(txn, p0, "proc", r1)} // T2 starts
			if tc.hints {
				evs = append(evs, simsidecar.Done(txn, p0, "proc"))
			}
			servertest.Send(t, portal, evs...)
			servertest.Send(t, proc, simsidecar.Call(txn, r1, "auth", a2)) // T3 on Auth
			evs = []*pb.Event{simsidecar.Return(txn, a2)}                  // T3 returned, T2 still running
			if tc.hints {
				evs = append(evs, simsidecar.Done(txn, r1, "auth"))
			}
			servertest.Send(t, proc, evs...)
			check("D", tc.want[3])
			if f := ts.FreeREST("db"); !f.Free {
				t.Fatalf("free(db) = false before any use of db: a future edge alone must not block (blockers %v)", f.Blockers)
			}
			servertest.Send(t, proc, simsidecar.Call(txn, r1, "db", d1), simsidecar.Return(txn, d1))
			servertest.Send(t, portal, simsidecar.Return(txn, r1), simsidecar.End(txn))
			check("after End", true)
			if n := ts.Txns("").Total; n != 0 {
				t.Fatalf("%d live transactions after End, want 0", n)
			}
		})
	}
}

// TestAdminREST checks the REST gateway's listings and errors.
func TestAdminREST(t *testing.T) {
	ts := servertest.Start(t, "")
	portal := ts.Sidecar("portal-1", "portal", "v1", "auth", "proc")
	ts.Sidecar("auth-1", "auth", "v1")
	servertest.Send(t, portal, simsidecar.Begin("t-1", 1), simsidecar.Call("t-1", 1, "auth", 2), simsidecar.Return("t-1", 2))
	servertest.Send(t, portal, simsidecar.Begin("t-2", 1))

	var g pb.Graph
	if code := ts.REST("/v1/graph", &g); code != http.StatusOK {
		t.Fatalf("GET /v1/graph: HTTP %d", code)
	}
	if g.LiveTransactions != 2 || len(g.Edges) != 2 {
		t.Fatalf("graph: %d live, edges %v; want 2 live and portal->auth, portal->proc", g.LiveTransactions, g.Edges)
	}
	nodes := map[string]*pb.ServiceNode{}
	for _, n := range g.Services {
		nodes[n.Name] = n
	}
	if a := nodes["auth"]; a == nil || a.UsedBy != 1 || len(a.Transactions) != 1 || a.Transactions[0] != "t-1" || a.Free {
		t.Fatalf("graph node auth = %v, want used by t-1 and not free", a)
	}
	if p := nodes["portal"]; p == nil || p.UsedBy != 2 || len(p.Versions) != 1 || p.Versions[0].Sessions != 1 {
		t.Fatalf("graph node portal = %v, want used by 2 with one v1 session", p)
	}

	var ss pb.ListSessionsResponse
	if code := ts.REST("/v1/sessions?service=portal", &ss); code != http.StatusOK || len(ss.Sessions) != 1 {
		t.Fatalf("GET /v1/sessions?service=portal: HTTP %d, %v", code, ss.Sessions)
	}
	if s := ss.Sessions[0]; s.InstanceId != "portal-1" || !s.Connected || s.Roots != 2 || s.LeaseId == 0 {
		t.Fatalf("session = %v, want portal-1 connected with 2 roots and a lease", s)
	}

	var tx pb.ListTransactionsResponse
	if code := ts.REST("/v1/transactions?service=auth", &tx); code != http.StatusOK {
		t.Fatalf("GET /v1/transactions: HTTP %d", code)
	}
	if tx.Total != 1 || len(tx.Transactions) != 1 || tx.Transactions[0].TxnId != "t-1" || tx.Transactions[0].Owner != "portal-1" {
		t.Fatalf("transactions using auth = %v", tx.Transactions)
	}
	if code := ts.REST("/v1/transactions?limit=20000", nil); code != http.StatusBadRequest {
		t.Fatalf("limit over the maximum: HTTP %d, want 400", code)
	}
	if code := ts.REST("/v1/services/nope/freeness", nil); code != http.StatusNotFound {
		t.Fatalf("freeness of an unknown service: HTTP %d, want 404", code)
	}
	var h map[string]any
	if code := ts.REST("/health", &h); code != http.StatusOK || h["healthy"] != true || h["etcd"] != "ok" {
		t.Fatalf("/health: HTTP %d %v", code, h)
	}
}
