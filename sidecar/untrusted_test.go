package sidecar_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/sidecar"
)

// served is what a handler saw of one request.
type served struct {
	version string
	txn     sidecar.Txn
	hdr     http.Header
}

// The complaint (issue 13): an HTTP request from outside the mesh
// carrying a valid traceparent joined the transaction it named; during a
// CV update its call to the updated service was held 30 s for a BEGIN that
// never comes, then sent to the old version, and the transaction kept the
// drain from ending. Now it starts a new root: its call goes to the new
// version at once, no call waits for a BEGIN, and the update ends as soon
// as the transaction that really used the old version does.
func TestOutsideTraceparentStartsANewRootDuringCVUpdate(t *testing.T) {
	ts := servertest.Start(t, "")
	seen := make(chan served, 4)
	backH := func(s *service, w http.ResponseWriter, r *http.Request) {
		tx, _ := sidecar.FromContext(r.Context())
		seen <- served{s.version, tx, r.Header.Clone()}
		fmt.Fprint(w, s.version)
	}
	startService(t, ts, "back", "v1", nil, backH)
	front := startService(t, ts, "front", "v1", []string{"back"}, relay("http://back/"))
	startService(t, ts, "back", "v2", nil, backH)
	ctx, cancel := context.WithTimeout(context.Background(), 2*within)
	defer cancel()

	// T0 used back@v1 and may call it again: v1 stays in use until T0 ends.
	ctx0, t0 := front.Begin(ctx)
	call, err := front.Route(ctx0, "back")
	if err != nil || call.Version != "v1" {
		t.Fatalf("T0's call: %+v, %v; want v1", call, err)
	}
	call.Finish()
	u, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "back", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV})
	if err != nil {
		t.Fatal(err)
	}
	phase := func() pb.Phase {
		g, err := ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		if err != nil {
			t.Fatal(err)
		}
		return g.Phase
	}
	servertest.Eventually(t, within, "the switch", func() bool { return phase() == pb.Phase_PHASE_DRAINING })

	const outside = "0af7651916cd43dd8448eb211c80319c"
	start := time.Now()
	body, err := get(ctx, http.DefaultClient, "http://"+front.addr+"/",
		http.Header{"Traceparent": {"00-" + outside + "-b7ad6b7169203331-01"}})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the outside request took %v", took)
	at := <-seen
	if body != "v2" || at.version != "v2" {
		t.Fatalf("the outside request ran on back %s (answer %q), want v2", at.version, body)
	}
	if at.txn.ID == outside || len(at.txn.ID) != 32 || at.txn.Correlation != outside {
		t.Fatalf("the outside request ran in %q correlated with %q, want a fresh id correlated with %s", at.txn.ID, at.txn.Correlation, outside)
	}
	if tp := at.hdr.Get("Traceparent"); len(tp) != 55 || tp[3:35] != outside {
		t.Fatalf("back got traceparent %q, want the outside trace continued", tp)
	}
	if took > time.Second {
		t.Fatalf("the outside request took %v: held", took)
	}
	if n := ts.Metric("coordinator_begin_wait_seconds_count"); n != 0 {
		t.Fatalf("%v calls waited for a BEGIN, want none", n)
	}
	if txn(ts, outside) != nil {
		t.Fatalf("the coordinator has a transaction named by the outside traceparent")
	}
	servertest.Eventually(t, within, "the outside request's root to end", func() bool { return txn(ts, at.txn.ID) == nil })
	if p := phase(); p != pb.Phase_PHASE_DRAINING {
		t.Fatalf("phase %v while T0 may still call back@v1, want DRAINING", p)
	}

	// T0 ends: nothing else holds v1, the update is DONE at once.
	if err := front.End(ctx0); err != nil {
		t.Fatal(err)
	}
	ended := time.Now()
	servertest.Eventually(t, within, "the update to finish", func() bool { return phase() == pb.Phase_PHASE_DONE })
	t.Logf("DONE %v after T0 (%s) ended", time.Since(ended), t0.ID)
	if d := time.Since(ended); d > 2*time.Second {
		t.Fatalf("DONE %v after the last transaction on v1 ended: the drain was held", d)
	}
	noRejections(t, front.client)
}

// An entry point (Config.EntryPoint) strips the mesh headers from outside
// requests: a request naming a live transaction in them runs as a new
// root, its handler sees no mesh header, and the transaction it named is
// untouched. StripMeshHeaders overrides the default either way.
func TestEntryPointStripsMeshHeaders(t *testing.T) {
	ts := servertest.Start(t, "")
	seen := make(chan served, 1)
	h := func(s *service, w http.ResponseWriter, r *http.Request) {
		tx, _ := sidecar.FromContext(r.Context())
		seen <- served{s.version, tx, r.Header.Clone()}
	}
	gw := startServiceWith(t, ts, sidecar.Config{EntryPoint: true}, "gw", "v1", nil, h)
	inner := startService(t, ts, "inner", "v1", nil, h)
	up := ts.Sidecar("up-1", "up", "v1", "gw", "inner") // an upstream sidecar

	// The same handlers behind the other choice of the option.
	serve := func(s *service, opts ...sidecar.InboundOption) string {
		srv := httptest.NewServer(sidecar.Middleware(s.Client, opts...)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h(s, w, r)
		})))
		t.Cleanup(srv.Close)
		return srv.Listener.Addr().String()
	}
	for i, tc := range []struct {
		name  string
		svc   string
		addr  string
		strip bool
	}{
		{"entry point: stripped by default", "gw", gw.addr, true},
		{"entry point with StripMeshHeaders(false): joined", "gw", serve(gw, sidecar.StripMeshHeaders(false)), false},
		{"inner service: joined by default", "inner", inner.addr, false},
		{"inner service with StripMeshHeaders(true): stripped", "inner", serve(inner, sidecar.StripMeshHeaders(true)), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, sub := servertest.TxnID(100+i), uint64(0x5b0+i)
			servertest.Send(t, up, simsidecar.Begin(id, 1), simsidecar.Call(id, 1, tc.svc, sub))
			ctx, cancel := context.WithTimeout(context.Background(), within)
			defer cancel()
			hdr := http.Header{"X-Coordinator-Txn": {id}, "X-Coordinator-Sub": {fmt.Sprintf("%016x", sub)},
				"Traceparent": {"00-" + id + "-" + fmt.Sprintf("%016x", sub) + "-01"}}
			if _, err := get(ctx, http.DefaultClient, "http://"+tc.addr+"/", hdr); err != nil {
				t.Fatal(err)
			}
			got := <-seen
			if !tc.strip {
				if got.txn.ID != id || got.txn.Sub != sub {
					t.Fatalf("ran as %s/%016x, want %s/%016x", got.txn.ID, got.txn.Sub, id, sub)
				}
				if got.hdr.Get("X-Coordinator-Txn") != id {
					t.Fatalf("the handler lost the mesh headers: %v", got.hdr)
				}
			} else {
				if got.txn.ID == id || len(got.txn.ID) != 32 || got.txn.Sub == sub || got.txn.Correlation != id {
					t.Fatalf("ran as %s/%016x (correlation %q), want a new root correlated with %s", got.txn.ID, got.txn.Sub, got.txn.Correlation, id)
				}
				if v, w := got.hdr.Get("X-Coordinator-Txn"), got.hdr.Get("X-Coordinator-Sub"); v != "" || w != "" {
					t.Fatalf("the handler saw mesh headers %q/%q, want them stripped", v, w)
				}
				servertest.Eventually(t, within, "the new root to end", func() bool { return txn(ts, got.txn.ID) == nil })
			}
			// The named transaction has exactly what up reported.
			if x := txn(ts, id); !slices.Equal(running(x), subs("up", 1, tc.svc, sub)) {
				t.Fatalf("%s runs %v, want only up's root and the sub up created", id, running(x))
			}
			servertest.Send(t, up, simsidecar.Return(id, sub), simsidecar.End(id))
		})
	}
	noRejections(t, gw.client, inner.client)
}

// The gRPC interceptors of an entry point strip the mesh metadata too,
// unary and streaming; without the option they join.
func TestEntryPointInterceptorsStripMeshMetadata(t *testing.T) {
	ts := servertest.Start(t, "")
	up := ts.Sidecar("up-1", "up", "v1", "backend")
	for i, tc := range []struct {
		name  string
		entry bool
		opts  []sidecar.InboundOption
		strip bool
	}{
		{"entry point", true, nil, true},
		{"entry point with StripMeshHeaders(false)", true, []sidecar.InboundOption{sidecar.StripMeshHeaders(false)}, false},
		{"inner service", false, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			c := startClient(t, ts, sidecar.Config{InstanceID: fmt.Sprintf("backend-%d", i), Service: "backend", Version: "v1",
				Address: lis.Addr().String(), EntryPoint: tc.entry})
			b := &mdBackend{seen: make(chan mdSeen, 1)}
			gs := grpc.NewServer(grpc.UnaryInterceptor(sidecar.UnaryServerInterceptor(c.Client, tc.opts...)),
				grpc.StreamInterceptor(sidecar.StreamServerInterceptor(c.Client, tc.opts...)))
			pb.RegisterAdminServiceServer(gs, b)
			go func() { _ = gs.Serve(lis) }()
			t.Cleanup(gs.Stop)
			conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			api := pb.NewAdminServiceClient(conn)

			for j, kind := range []string{"unary", "stream"} {
				id, sub := servertest.TxnID(200+10*i+j), uint64(0x5b0+10*i+j)
				servertest.Send(t, up, simsidecar.Begin(id, 1), simsidecar.Call(id, 1, "backend", sub))
				ctx, cancel := context.WithTimeout(context.Background(), within)
				ctx = metadata.AppendToOutgoingContext(ctx, sidecar.HeaderTxn, id, sidecar.HeaderSub, fmt.Sprintf("%016x", sub))
				if kind == "unary" {
					_, err = api.GetFreeness(ctx, &pb.GetFreenessRequest{})
				} else {
					var s pb.AdminService_WatchUpdateClient
					if s, err = api.WatchUpdate(ctx, &pb.WatchUpdateRequest{}); err == nil {
						_, err = s.Recv()
					}
				}
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				got := <-b.seen
				if tc.strip {
					if got.txn.ID == id || len(got.txn.ID) != 32 || got.txn.Sub == sub {
						t.Fatalf("%s: ran as %s/%016x, want a new root", kind, got.txn.ID, got.txn.Sub)
					}
					if len(got.md.Get(sidecar.HeaderTxn)) != 0 || len(got.md.Get(sidecar.HeaderSub)) != 0 {
						t.Fatalf("%s: the handler saw mesh metadata %v, want it stripped", kind, got.md)
					}
					servertest.Eventually(t, within, "the new root to end", func() bool { return txn(ts, got.txn.ID) == nil })
				} else if got.txn.ID != id || got.txn.Sub != sub {
					t.Fatalf("%s: ran as %s/%016x, want %s/%016x", kind, got.txn.ID, got.txn.Sub, id, sub)
				}
				if x := txn(ts, id); !slices.Equal(running(x), subs("up", 1, "backend", sub)) {
					t.Fatalf("%s: %s runs %v, want only up's root and the sub up created", kind, id, running(x))
				}
				servertest.Send(t, up, simsidecar.Return(id, sub), simsidecar.End(id))
			}
			noRejections(t, c)
		})
	}
}

type mdSeen struct {
	txn sidecar.Txn
	md  metadata.MD
}

// mdBackend reports the transaction and the incoming metadata of each
// call its handlers see.
type mdBackend struct {
	pb.UnimplementedAdminServiceServer
	seen chan mdSeen
}

func (b *mdBackend) GetFreeness(ctx context.Context, _ *pb.GetFreenessRequest) (*pb.Freeness, error) {
	tx, _ := sidecar.FromContext(ctx)
	md, _ := metadata.FromIncomingContext(ctx)
	b.seen <- mdSeen{tx, md}
	return &pb.Freeness{}, nil
}

func (b *mdBackend) WatchUpdate(_ *pb.WatchUpdateRequest, s pb.AdminService_WatchUpdateServer) error {
	tx, _ := sidecar.FromContext(s.Context())
	md, _ := metadata.FromIncomingContext(s.Context())
	b.seen <- mdSeen{tx, md}
	return s.Send(&pb.Update{})
}
