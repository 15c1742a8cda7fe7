package coordinator_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage/memstore"
)

// memServer is a coordinator on the memory store (storage/memstore, which
// passes the Store conformance suite that the etcd store passes), served
// on a gRPC server of its own: no etcd, no election, no replica gate. It
// is for component tests of event application, quotas, updates and
// sessions that claim nothing about durability; those that do (restore,
// failover, quarantine, integration/) run on servertest's embedded etcd.
// Its methods mirror servertest.Server's, so a test moves between the two
// by changing how it starts.
type memServer struct {
	t     testing.TB
	Store *memstore.Store
	coord *coordinator.Coordinator
	reg   *prometheus.Registry
	Conn  *grpc.ClientConn
	Admin pb.AdminServiceClient
}

// startMem starts a coordinator on a fresh memory store with servertest's
// tight timings (2 ms write-behind, sidecars heartbeating every 500 ms with
// one miss allowed, 2 s leases), adjusted by set; it stops at cleanup.
func startMem(t testing.TB, set ...func(*coordinator.Config)) *memServer {
	t.Helper()
	return startMemServer(t, nil, set...)
}

// startMemServer is startMem with options for its gRPC server.
func startMemServer(t testing.TB, gopts []grpc.ServerOption, set ...func(*coordinator.Config)) *memServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := memstore.New(memstore.Options{})
	t.Cleanup(st.Close)
	m := &memServer{t: t, Store: st, reg: prometheus.NewRegistry()}
	cfg := coordinator.Config{
		Store:            st,
		Registerer:       m.reg,
		FlushInterval:    2 * time.Millisecond,
		DefaultHeartbeat: 500 * time.Millisecond,
		DefaultMisses:    1,
		MinSessionTTL:    2 * time.Second,
	}
	for _, f := range set {
		f(&cfg)
	}
	c, err := coordinator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	m.coord = c
	gs := grpc.NewServer(append(gopts, coordinator.ServerOptions()...)...)
	pb.RegisterAdminServiceServer(gs, c.AdminServer())
	pb.RegisterSidecarServiceServer(gs, c.SidecarServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	if m.Conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		t.Fatal(err)
	}
	m.Admin = pb.NewAdminServiceClient(m.Conn)
	t.Cleanup(func() {
		m.Conn.Close()
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if err := c.Stop(sctx); err != nil && !errors.Is(err, coordinator.ErrFenced) {
			t.Errorf("stop: %v", err)
		}
		gs.Stop()
	})
	return m
}

// Leader is the coordinator (it always leads).
func (m *memServer) Leader() *coordinator.Coordinator { return m.coord }

// Sidecar registers a simulated sidecar of svc@version with deps.
func (m *memServer) Sidecar(instance, svc, version string, deps ...string) *simsidecar.Sidecar {
	m.t.Helper()
	sc, _ := m.Register(&pb.Register{
		InstanceId: instance, Service: svc, Version: version,
		Address: "127.0.0.1:1", Dependencies: deps,
		HeartbeatInterval: durationpb.New(500 * time.Millisecond), AllowedMisses: 1,
	})
	return sc
}

// Register opens a simulated sidecar stream with reg; it closes at cleanup.
func (m *memServer) Register(reg *pb.Register) (*simsidecar.Sidecar, *pb.Registered) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sc, r, err := simsidecar.Connect(ctx, m.Conn, reg)
	if err != nil {
		m.t.Fatalf("register %s: %v", reg.InstanceId, err)
	}
	m.t.Cleanup(sc.Close)
	return sc, r
}

// Freeness asks the admin service whether svc is free.
func (m *memServer) Freeness(svc string) *pb.Freeness {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := m.Admin.GetFreeness(ctx, &pb.GetFreenessRequest{Service: svc})
	if err != nil {
		m.t.Fatalf("freeness %s: %v", svc, err)
	}
	return f
}

// Txns lists live transactions (of service, if set).
func (m *memServer) Txns(service string) *pb.ListTransactionsResponse {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := m.Admin.ListTransactions(ctx, &pb.ListTransactionsRequest{Service: service})
	if err != nil {
		m.t.Fatalf("list transactions: %v", err)
	}
	return r
}

// Metric returns the value of a metric (name, or name{labels} as exposed),
// summed over its labels, as servertest.Server.Metric does.
func (m *memServer) Metric(name string) float64 {
	m.t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	var sum float64
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		metric, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") || (metric != name && !strings.HasPrefix(metric, name+"{")) {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			m.t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// testServer is what the helpers of these tests need of a coordinator
// under test: a servertest.Server (embedded etcd) or a memServer.
type testServer interface {
	Register(*pb.Register) (*simsidecar.Sidecar, *pb.Registered)
	Sidecar(instance, svc, version string, deps ...string) *simsidecar.Sidecar
	Metric(name string) float64
	Txns(service string) *pb.ListTransactionsResponse
	Leader() *coordinator.Coordinator
	AdminClient() pb.AdminServiceClient
}

var _ testServer = (*memServer)(nil)

// AdminClient is the admin service's client.
func (m *memServer) AdminClient() pb.AdminServiceClient { return m.Admin }
