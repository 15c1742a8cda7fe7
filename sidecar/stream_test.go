package sidecar_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/testca"
	"github.com/coordinator/coordinator/security/tlsfiles"
	"github.com/coordinator/coordinator/sidecar"
)

// In steady state a request costs the request path no round trip to the
// coordinator: with the coordinator stopped, requests through a chain of
// services still succeed, their events queued. A new coordinator on the
// same data dir (at another address) gets every client back: each
// re-registers with its live roots, a transaction that spans the restart
// is resynced, the queued events are delivered, and it all ends.
func TestSteadyStateNeedsNoCoordinator(t *testing.T) {
	dir := t.TempDir()
	ts := servertest.Start(t, dir)
	var addr atomic.Pointer[string]
	a := ts.GRPCAddr()
	addr.Store(&a)
	cfg := sidecar.Config{
		Coordinators: []string{"passthrough:///coordinator"},
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", *addr.Load())
		})},
	}
	gate := make(chan struct{})
	back := startServiceWith(t, ts, cfg, "back", "v1", nil, func(_ *service, w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("wait") != "" {
			<-gate
		}
		fmt.Fprint(w, "ok")
	})
	mid := startServiceWith(t, ts, cfg, "mid", "v1", []string{"back"}, func(s *service, w http.ResponseWriter, r *http.Request) {
		relay("http://back/?"+r.URL.RawQuery)(s, w, r)
	})
	front := startServiceWith(t, ts, cfg, "front", "v1", []string{"mid"}, func(s *service, w http.ResponseWriter, r *http.Request) {
		relay("http://mid/?"+r.URL.RawQuery)(s, w, r)
	})
	clients := []*service{front, mid, back}

	ctx, cancel := context.WithTimeout(context.Background(), 2*within)
	defer cancel()
	spanning := make(chan error, 1)
	go func() {
		_, err := get(ctx, http.DefaultClient, "http://"+front.addr+"/?wait=1", nil)
		spanning <- err
	}()
	var live string
	servertest.Eventually(t, within, "the spanning request at back", func() bool {
		x := ts.Txns("back")
		if x.Total != 1 || len(x.Transactions[0].Running) != 3 {
			return false
		}
		live = x.Transactions[0].TxnId
		return true
	})

	ts.Stop()
	for i := range 20 {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := get(rctx, http.DefaultClient, "http://"+front.addr+"/", nil)
		rcancel()
		if err != nil || out != "ok" {
			t.Fatalf("request %d with the coordinator stopped: %q, %v", i, out, err)
		}
	}
	for _, s := range clients {
		if st := s.Stats(); st.Connected || (s != back && st.Queued == 0) {
			t.Fatalf("%s with the coordinator stopped: %+v, want disconnected, with events queued but at back", s.name, st)
		}
	}

	ts2 := servertest.Start(t, dir)
	a2 := ts2.GRPCAddr()
	addr.Store(&a2)
	servertest.Eventually(t, within, "every client to re-register and deliver its queue", func() bool {
		for _, s := range clients {
			if st := s.Stats(); !st.Connected || st.Registrations < 2 || st.Queued != 0 {
				return false
			}
		}
		return true
	})
	x := ts2.Txns("")
	if x.Total != 1 || x.Transactions[0].TxnId != live || x.Transactions[0].Owner != "front-v1" {
		t.Fatalf("live transactions after the restart: %v, want only %s, owned by front-v1", x.Transactions, live)
	}
	close(gate)
	if err := <-spanning; err != nil {
		t.Fatalf("request spanning the restart: %v", err)
	}
	servertest.Eventually(t, within, "the spanning transaction to end", func() bool { return ts2.Txns("").Total == 0 })
	// The new coordinator did not see the spanning transaction start, so
	// it knows it as legacy, without its sub-transactions: their RETURNs
	// are rejected as NotFound. Nothing else is.
	for _, s := range clients {
		for _, r := range s.log.rejections() {
			if r != "NotFound "+live {
				t.Errorf("%s: rejection %q, want only NotFound of %s", s.name, r, live)
			}
		}
	}
}

// proxy forwards TCP connections to target; it can lose what flows in one
// direction, and cut every connection.
type proxy struct {
	lis              net.Listener
	target           string
	loseUp, loseDown atomic.Bool // client->target, target->client
	mu               sync.Mutex
	conns            []net.Conn
}

func startProxy(t *testing.T, target string) *proxy {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{lis: lis, target: target}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go p.pipe(s, c, &p.loseUp)
			go p.pipe(c, s, &p.loseDown)
		}
	}()
	t.Cleanup(func() { lis.Close(); p.cut() })
	return p
}

func (p *proxy) pipe(dst, src net.Conn, lose *atomic.Bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if !lose.Load() {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Events applied by the coordinator whose Ack was lost are sent again on
// the next stream: the coordinator rejects those it had as duplicates,
// counted apart from real rejections, and ends in the state one delivery
// gives.
func TestLostAcksResendDuplicates(t *testing.T) {
	ts := servertest.Start(t, "")
	ts.Sidecar("back-1", "back", "v1")
	p := startProxy(t, ts.GRPCAddr())
	c := startClient(t, ts, sidecar.Config{Coordinators: []string{p.lis.Addr().String()},
		InstanceID: "front-1", Service: "front", Version: "v1", Dependencies: []string{"back"}})

	p.loseDown.Store(true)
	ctx, root := c.Begin(context.Background())
	first, err := c.Route(ctx, "back")
	if err != nil {
		t.Fatal(err)
	}
	first.Finish()
	second, err := c.Route(ctx, "back")
	if err != nil {
		t.Fatal(err)
	}
	want := subs("front", root.Sub, "back", second.Sub)
	servertest.Eventually(t, within, "the events to be applied", func() bool {
		return slices.Equal(running(txn(ts, root.ID)), want)
	})
	if st := c.Stats(); st.Acked != 0 || st.Queued != 4 {
		t.Fatalf("stats with acks lost: %+v, want 4 events unacknowledged", st)
	}

	p.loseDown.Store(false)
	p.cut()
	servertest.Eventually(t, within, "the resend to be acknowledged", func() bool {
		st := c.Stats()
		return st.Registrations == 2 && st.Queued == 0
	})
	// BEGIN and the second CALL were rejected as duplicates; the first
	// CALL and its RETURN came late, their sub-transaction returned: the
	// coordinator did not start it again, and they are duplicates too.
	if st := c.Stats(); st.Resent != 4 || st.Duplicates != 4 || st.Rejected != 0 || st.Late != 0 {
		t.Fatalf("stats = %+v, want 4 resent, 4 duplicates, no rejection, none late", st)
	}
	x := txn(ts, root.ID)
	if !slices.Equal(running(x), want) || !slices.Equal(used(x), []string{"back@v1", "front@v1"}) || x.Legacy {
		t.Fatalf("transaction after the resend: %v", x)
	}
	second.Finish()
	if err := c.End(ctx); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, within, "the end", func() bool { return ts.Txns("").Total == 0 })
	noRejections(t, c)
}

// Events lost on the way to the coordinator are sent again on the next
// stream and applied then: without the resend the coordinator would never
// learn that the transaction used back.
func TestLostEventsAreResent(t *testing.T) {
	ts := servertest.Start(t, "")
	ts.Sidecar("back-1", "back", "v1")
	p := startProxy(t, ts.GRPCAddr())
	c := startClient(t, ts, sidecar.Config{Coordinators: []string{p.lis.Addr().String()},
		InstanceID: "front-1", Service: "front", Version: "v1", Dependencies: []string{"back"}})
	ctx, root := c.Begin(context.Background())
	servertest.Eventually(t, within, "the BEGIN to be acknowledged", func() bool { return c.Stats().Acked == 1 })

	p.loseUp.Store(true)
	first, err := c.Route(ctx, "back")
	if err != nil {
		t.Fatal(err)
	}
	first.Finish()
	second, err := c.Route(ctx, "back")
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, within, "the events to be sent", func() bool { return c.Stats().Sent == 4 })
	if x := txn(ts, root.ID); len(x.Running) != 1 || len(x.Used) != 1 {
		t.Fatalf("the coordinator got lost events: %v", x)
	}

	p.loseUp.Store(false)
	p.cut()
	servertest.Eventually(t, within, "the resent events to be applied", func() bool {
		return c.Stats().Queued == 0 && slices.Equal(running(txn(ts, root.ID)), subs("front", root.Sub, "back", second.Sub))
	})
	if x := txn(ts, root.ID); !slices.Equal(used(x), []string{"back@v1", "front@v1"}) || x.Legacy {
		t.Fatalf("transaction after the resend: %v", x)
	}
	if st := c.Stats(); st.Resent != 3 || st.Duplicates != 0 || st.Rejected != 0 {
		t.Fatalf("stats = %+v, want 3 resent, applied once", st)
	}
	second.Finish()
	if err := c.End(ctx); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, within, "the end", func() bool { return ts.Txns("").Total == 0 })
}

// follower stands in for a coordinator replica that does not lead (the
// coordinator has no replication yet): it answers every stream with a
// Redirect to the leader.
type follower struct {
	pb.UnimplementedSidecarServiceServer
	leader  string
	streams atomic.Int32
}

func (f *follower) Connect(s pb.SidecarService_ConnectServer) error {
	f.streams.Add(1)
	if _, err := s.Recv(); err != nil {
		return err
	}
	return s.Send(&pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_Redirect{Redirect: &pb.Redirect{LeaderAddress: f.leader}}})
}

// A client sent to a replica that does not lead follows its Redirect.
func TestRedirectToTheLeader(t *testing.T) {
	ts := servertest.Start(t, "")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &follower{leader: ts.GRPCAddr()}
	gs := grpc.NewServer()
	pb.RegisterSidecarServiceServer(gs, f)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)

	c := startClient(t, ts, sidecar.Config{Coordinators: []string{lis.Addr().String()}, InstanceID: "a-1", Service: "a", Version: "v1"})
	if n := f.streams.Load(); n != 1 {
		t.Fatalf("%d streams to the follower, want 1", n)
	}
	ctx, root := c.Begin(context.Background())
	servertest.Eventually(t, within, "the BEGIN at the leader", func() bool { return txn(ts, root.ID) != nil })
	if err := c.End(ctx); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, within, "the END at the leader", func() bool { return ts.Txns("").Total == 0 })
}

// Start returns the coordinator's refusal of an invalid registration, and
// gives up with its context when no coordinator answers.
func TestStartErrors(t *testing.T) {
	ts := servertest.Start(t, "")
	c, err := sidecar.New(sidecar.Config{Coordinators: []string{ts.GRPCAddr()}, InstanceID: "a-1", Service: "not a name", Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := c.Start(ctx); !errors.Is(err, sidecar.ErrRegister) {
		t.Fatalf("Start = %v, want ErrRegister", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lis.Close() // nobody listens there now
	c, err = sidecar.New(sidecar.Config{Coordinators: []string{lis.Addr().String()}, InstanceID: "a-1", Service: "a", Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer scancel()
	if err := c.Start(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start = %v, want the context's deadline", err)
	}
	if err := c.Start(ctx); !errors.Is(err, sidecar.ErrStarted) {
		t.Fatalf("second Start = %v, want ErrStarted", err)
	}
	ctx2, _ := c.Begin(ctx) // queued, never delivered
	if err := c.Close(ctx); !errors.Is(err, sidecar.ErrUnflushed) {
		t.Fatalf("Close = %v, want ErrUnflushed", err)
	}
	if err := c.End(ctx2); !errors.Is(err, sidecar.ErrClosed) {
		t.Fatalf("End after Close = %v, want ErrClosed", err)
	}
	if _, err := sidecar.New(sidecar.Config{InstanceID: "a"}); !errors.Is(err, sidecar.ErrInvalidConfig) {
		t.Fatalf("New = %v, want ErrInvalidConfig", err)
	}
}

// A workload identity the coordinator's policy does not allow to register
// as the service it names is refused for good: Start returns the refusal
// (PermissionDenied) at once instead of retrying until its context ends,
// while the same certificate registers as its own service.
func TestStartReturnsIdentityRefusal(t *testing.T) {
	ca := testca.New(t, "ca")
	dir := t.TempDir()
	srv := ca.WriteFiles(t, dir, "coordinator", testca.Leaf{URIs: []string{"spiffe://example.org/ns/coordinator/sa/coordinator"},
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	ts := servertest.Start(t, "", servertest.WithTLS(tlsfiles.Files{Cert: srv.Cert, Key: srv.Key, CA: srv.CA}))
	auth := ca.WriteFiles(t, dir, "auth", testca.Leaf{URIs: []string{"spiffe://example.org/ns/shop/sa/auth"}, ClientOnly: true})
	files := tlsfiles.Files{Cert: auth.Cert, Key: auth.Key, CA: auth.CA}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for _, tc := range []struct {
		svc  string
		code codes.Code
	}{{"billing", codes.PermissionDenied}, {"auth", codes.OK}} {
		c, err := sidecar.New(sidecar.Config{Coordinators: []string{ts.GRPCAddr()}, InstanceID: tc.svc + "-1", Service: tc.svc, Version: "v1", TLS: files})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Start(ctx)
		if tc.code == codes.OK {
			if err != nil {
				t.Fatalf("Start as %s: %v", tc.svc, err)
			}
		} else if !errors.Is(err, sidecar.ErrRegister) || status.Code(err) != tc.code {
			t.Fatalf("Start as %s = %v, want ErrRegister with %v", tc.svc, err, tc.code)
		}
		if err := c.Close(ctx); err != nil && tc.code == codes.OK {
			t.Fatal(err)
		}
	}
}

// Close delivers what is queued; with KeepSessionOnClose the roots stay
// live at the coordinator.
func TestCloseFlushes(t *testing.T) {
	ts := servertest.Start(t, "")
	c := startClient(t, ts, sidecar.Config{InstanceID: "a-1", Service: "a", Version: "v1",
		FlushInterval: time.Hour, BatchSize: 1000, KeepSessionOnClose: true})
	// Start returns once the first routing is applied, its ack queued and
	// the sender woken to send it at once: BEGINs queued before that send
	// would go with it. Let it go first (nothing else is urgent here: no
	// other routing comes to a service that calls nothing).
	servertest.Eventually(t, within, "the first routing ack to be sent", func() bool {
		time.Sleep(100 * time.Millisecond)
		return c.Stats().Connected
	})
	var ids []string
	for range 10 {
		_, root := c.Begin(context.Background())
		ids = append(ids, root.ID)
	}
	if st := c.Stats(); st.Queued != 10 || st.Sent != 0 {
		t.Fatalf("stats before Close: %+v, want 10 queued", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Queued != 0 || st.Acked != 10 {
		t.Fatalf("stats after Close: %+v, want 10 acked", st)
	}
	for _, id := range ids {
		if x := txn(ts, id); x == nil || x.Owner != "a-1" {
			t.Fatalf("root %s after Close: %v", id, x)
		}
	}
}

// By default Close delivers what is queued, then deregisters: the session
// ends at once, with the roots that ran only here, and it is no expiry.
func TestCloseDeregisters(t *testing.T) {
	ts := servertest.Start(t, "")
	c := startClient(t, ts, sidecar.Config{InstanceID: "a-1", Service: "a", Version: "v1",
		FlushInterval: time.Hour, BatchSize: 1000})
	var ids []string
	for range 3 {
		_, root := c.Begin(context.Background())
		ids = append(ids, root.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Queued != 0 || st.Acked != 3 {
		t.Fatalf("stats after Close: %+v, want 3 acked", st)
	}
	for _, id := range ids {
		if x := txn(ts, id); x != nil {
			t.Fatalf("root %s after Close: %v, want ended with the session", id, x)
		}
	}
	resp, err := ts.Admin.ListSessions(ctx, &pb.ListSessionsRequest{})
	if err != nil || len(resp.Sessions) != 0 {
		t.Fatalf("sessions after Close: %v %v, want none", resp, err)
	}
	if got := ts.Metric(`coordinator_sessions_dropped_total{reason="deregistered"}`); got != 1 {
		t.Fatalf("sessions dropped as deregistered = %v, want 1", got)
	}
	sp, err := ts.Admin.GetSelfPreservation(ctx, &pb.GetSelfPreservationRequest{})
	if err != nil || sp.RecentExpiries != 0 {
		t.Fatalf("self-preservation after Close: %v %v, want no expiry", sp, err)
	}
}
