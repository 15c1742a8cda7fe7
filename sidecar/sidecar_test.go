package sidecar_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/sidecar"
)

// mesh runs HTTP services on loopback, each with its own sidecar client.
type mesh struct {
	t      *testing.T
	ts     *servertest.Server
	mu     sync.Mutex
	served map[string][]string // txn -> "svc@version" served, in order
	client map[string]*sidecar.Client
}

func newMesh(t *testing.T) *mesh {
	return &mesh{t: t, ts: servertest.Start(t, ""), served: map[string][]string{}, client: map[string]*sidecar.Client{}}
}

// add starts svc@version with handler h (given the client to call others).
func (m *mesh) add(svc, version string, deps []string, h func(c *http.Client, w http.ResponseWriter, r *http.Request)) {
	m.t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		m.t.Fatal(err)
	}
	c, err := sidecar.New(sidecar.Config{
		Coordinators: []string{m.ts.GRPCAddr()}, InstanceID: svc + "-" + version, Service: svc, Version: version,
		Address: lis.Addr().String(), Dependencies: deps, HeartbeatInterval: 500 * time.Millisecond,
	})
	if err != nil {
		m.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		m.t.Fatal(err)
	}
	hc := &http.Client{Transport: sidecar.Transport(c, nil)}
	srv := &http.Server{Handler: sidecar.Middleware(c)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if t, ok := sidecar.FromContext(r.Context()); ok {
			m.mu.Lock()
			m.served[t.ID] = append(m.served[t.ID], svc+"@"+version)
			m.mu.Unlock()
		}
		h(hc, w, r)
	}))}
	go func() { _ = srv.Serve(lis) }()
	m.t.Cleanup(func() {
		_ = srv.Close()
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		_ = c.Close(cctx)
	})
	m.client[svc+"@"+version] = c
}

func get(ctx context.Context, c *http.Client, url string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), nil
}

// seed builds the seed scenario; portal waits at gate between T1 and T2
// when the request has ?gate=1.
func seed(t *testing.T, gate <-chan struct{}) *mesh {
	m := newMesh(t)
	auth := func(version string) func(*http.Client, http.ResponseWriter, *http.Request) {
		return func(_ *http.Client, w http.ResponseWriter, r *http.Request) {
			if tok := r.URL.Query().Get("token"); tok != "" && tok != version {
				http.Error(w, "token of another version", http.StatusUnauthorized)
				return
			}
			fmt.Fprint(w, version)
		}
	}
	m.add("auth", "v1", nil, auth("v1"))
	m.add("db", "v1", nil, func(_ *http.Client, w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "row") })
	m.add("proc", "v1", []string{"auth", "db"}, func(c *http.Client, w http.ResponseWriter, r *http.Request) {
		if _, err := get(r.Context(), c, "http://auth/validate?token="+r.URL.Query().Get("token")); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		_, _ = get(r.Context(), c, "http://db/q")
		fmt.Fprint(w, "processed")
	})
	m.add("portal", "v1", []string{"auth", "proc"}, func(c *http.Client, w http.ResponseWriter, r *http.Request) {
		tok, err := get(r.Context(), c, "http://auth/token")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if r.URL.Query().Get("gate") != "" {
			<-gate
		}
		if _, err := get(r.Context(), c, "http://proc/p?token="+tok); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprint(w, "ok")
	})
	m.add("auth", "v2", nil, auth("v2"))
	return m
}

func (m *mesh) portal(ctx context.Context, query string, header http.Header) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://portal/"+query, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	addr := m.endpoint("portal")
	req.URL.Host, req.Host = addr, addr
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, b)
	}
	return string(b), nil
}

func (m *mesh) endpoint(svc string) string {
	ss, err := m.ts.Admin.ListSessions(context.Background(), &pb.ListSessionsRequest{Service: svc})
	if err != nil || len(ss.Sessions) == 0 {
		m.t.Fatalf("no session of %s: %v", svc, err)
	}
	return ss.Sessions[0].Address
}

// The seed scenario through Middleware and Transport, with a CV update of
// auth between T1 and T3 of a request: the request stays on v1 (its token
// validates), a new one runs on v2, and every event was accepted.
func TestSeedThroughHTTPWithCVUpdate(t *testing.T) {
	gate := make(chan struct{})
	m := seed(t, gate)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := make(chan error, 1)
	go func() { _, err := m.portal(ctx, "?gate=1", nil); first <- err }()
	servertest.Eventually(t, 10*time.Second, "the first request to use auth", func() bool {
		return m.ts.Txns("auth").Total == 1
	})
	if f := m.ts.FreeREST("auth"); f.Free {
		t.Fatal("auth free while a request that used it may call it again")
	}
	u, err := m.ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "auth", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, "the switch", func() bool {
		g, _ := m.ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		return g.GetPhase() == pb.Phase_PHASE_DRAINING
	})
	if _, err := m.portal(ctx, "", http.Header{"X-Request-Id": {"after-switch"}}); err != nil {
		t.Fatalf("request after the switch: %v", err)
	}
	close(gate)
	if err := <-first; err != nil {
		t.Fatalf("request spanning the switch: %v", err)
	}
	servertest.Eventually(t, 10*time.Second, "the update to finish", func() bool {
		g, _ := m.ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		return g.GetPhase() == pb.Phase_PHASE_DONE
	})
	m.mu.Lock()
	defer m.mu.Unlock()
	if got := strings.Join(m.served["after-switch"], " "); !strings.Contains(got, "auth@v2") || strings.Contains(got, "auth@v1") {
		t.Fatalf("the request after the switch was served by %s, want auth@v2 only", got)
	}
	for txn, served := range m.served {
		vs := map[string]bool{}
		for _, s := range served {
			if strings.HasPrefix(s, "auth@") {
				vs[s] = true
			}
		}
		if len(vs) > 1 {
			t.Fatalf("transaction %s ran on %v", txn, served)
		}
	}
	for name, c := range m.client {
		if n := c.Rejected(); n != 0 {
			t.Fatalf("%s: %d events rejected", name, n)
		}
	}
	servertest.Eventually(t, 10*time.Second, "every transaction to end", func() bool { return m.ts.Txns("").Total == 0 })
}

// In steady state a request costs no round trip to the coordinator: with
// the coordinator stopped, requests still go through (events are queued).
func TestSteadyStateNeedsNoCoordinator(t *testing.T) {
	m := seed(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	portal := m.endpoint("portal")
	_ = portal
	m.ts.Stop()
	for i := range 20 {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+portal+"/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("request %d with the coordinator down: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d with the coordinator down: %s %s", i, resp.Status, b)
		}
	}
}

// adminStub is a real gRPC server (the generated AdminService) standing in
// for a service called over gRPC: it records the transaction it ran in.
type adminStub struct {
	pb.UnimplementedAdminServiceServer
	version string
	seen    chan sidecar.Txn
}

func (a *adminStub) GetFreeness(ctx context.Context, req *pb.GetFreenessRequest) (*pb.Freeness, error) {
	t, _ := sidecar.FromContext(ctx)
	a.seen <- t
	return &pb.Freeness{Service: a.version}, nil
}

// A gRPC call through Client.Conn carries the transaction; the server
// interceptor joins it as the sub-transaction the caller reported.
func TestGRPCConnAndInterceptor(t *testing.T) {
	ts := servertest.Start(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	newClient := func(svc, addr string, deps ...string) *sidecar.Client {
		c, err := sidecar.New(sidecar.Config{Coordinators: []string{ts.GRPCAddr()}, InstanceID: svc + "-1", Service: svc,
			Version: "v1", Address: addr, Dependencies: deps})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backend := newClient("backend", lis.Addr().String())
	stub := &adminStub{version: "v1", seen: make(chan sidecar.Txn, 1)}
	gs := grpc.NewServer(grpc.UnaryInterceptor(sidecar.UnaryServerInterceptor(backend)))
	pb.RegisterAdminServiceServer(gs, stub)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	front := newClient("front", "127.0.0.1:1", "backend")
	servertest.Eventually(t, 10*time.Second, "front to know backend's endpoint", func() bool {
		_, err := pb.NewAdminServiceClient(front.Conn("backend")).GetFreeness(context.Background(), &pb.GetFreenessRequest{})
		if err == nil {
			<-stub.seen
		}
		return err == nil
	})
	tctx, txn := front.Begin(ctx)
	if _, err := pb.NewAdminServiceClient(front.Conn("backend")).GetFreeness(tctx, &pb.GetFreenessRequest{}); err != nil {
		t.Fatal(err)
	}
	got := <-stub.seen
	if got.ID != txn.ID || got.Sub == 0 || got.Sub == txn.Sub {
		t.Fatalf("backend ran in %+v, want transaction %s as a new sub-transaction", got, txn.ID)
	}
	servertest.Eventually(t, 10*time.Second, "the call on the coordinator", func() bool {
		r := ts.Txns("backend")
		return r.Total == 1 && r.Transactions[0].TxnId == txn.ID
	})
	front.End(txn)
	servertest.Eventually(t, 10*time.Second, "the end", func() bool { return ts.Txns("").Total == 0 })
}

// The client reconnects when its coordinator restarts (same data dir, same
// address), re-registers with its live roots, and its events flow again.
func TestReconnectResyncsLiveRoots(t *testing.T) {
	dir := t.TempDir()
	ts := servertest.Start(t, dir)
	addr := ts.GRPCAddr()
	c, err := sidecar.New(sidecar.Config{Coordinators: []string{addr}, InstanceID: "a-1", Service: "a", Version: "v1",
		Address: "127.0.0.1:1", HeartbeatInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	_, live := c.Begin(ctx)
	_, ended := c.Begin(ctx)
	servertest.Eventually(t, 10*time.Second, "both roots on the coordinator", func() bool { return ts.Txns("").Total == 2 })
	ts.Stop()
	c.End(ended) // while the coordinator is down: lost with the stream, fixed by the resync

	ts2 := servertest.Start(t, dir, func(cfg *server.Config) { cfg.GRPCAddr = addr })
	servertest.Eventually(t, 20*time.Second, "the client to re-register with its live root", func() bool {
		ss, err := ts2.Admin.ListSessions(ctx, &pb.ListSessionsRequest{})
		if err != nil || len(ss.Sessions) != 1 || !ss.Sessions[0].Connected {
			return false
		}
		r := ts2.Txns("")
		return r.Total == 1 && r.Transactions[0].TxnId == live.ID
	})
	c.End(live)
	servertest.Eventually(t, 10*time.Second, "the End sent after the reconnect", func() bool { return ts2.Txns("").Total == 0 })
	if n := c.Rejected(); n != 0 {
		t.Fatalf("%d events rejected", n)
	}
}
