package sidecar_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/sidecar"
)

const within = 20 * time.Second

// recorder is a slog.Handler that keeps the "event rejected" records.
type recorder struct {
	mu       sync.Mutex
	rejected []string // "code txn"
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	if rec.Message != "event rejected" {
		return nil
	}
	var code, txn string
	rec.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "code":
			code = a.Value.String()
		case "txn":
			txn = a.Value.String()
		}
		return true
	})
	r.mu.Lock()
	r.rejected = append(r.rejected, code+" "+txn)
	r.mu.Unlock()
	return nil
}

func (r *recorder) rejections() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.rejected)
}

// client is a started sidecar client and the record of what it logged.
type client struct {
	*sidecar.Client
	log *recorder
}

// startClient starts a client of cfg (Coordinators defaults to ts, the
// heartbeat to 500ms); it closes at cleanup.
func startClient(t *testing.T, ts *servertest.Server, cfg sidecar.Config) client {
	t.Helper()
	if cfg.Coordinators == nil {
		cfg.Coordinators = []string{ts.GRPCAddr()}
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = 500 * time.Millisecond
	}
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1:1"
	}
	rec := &recorder{}
	cfg.Logger = slog.New(rec)
	c, err := sidecar.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("start %s: %v", cfg.InstanceID, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return client{Client: c, log: rec}
}

// noRejections fails if any client had an event rejected.
func noRejections(t *testing.T, cs ...client) {
	t.Helper()
	for _, c := range cs {
		if st := c.Stats(); st.Rejected != 0 {
			t.Errorf("%d events rejected: %v", st.Rejected, c.log.rejections())
		}
	}
}

// service is an HTTP service on loopback with Middleware and a client
// whose Transport routes its outbound requests.
type service struct {
	client
	name, version, addr string
	http                *http.Client
}

// startService runs name@version with deps; h serves its requests.
func startService(t *testing.T, ts *servertest.Server, name, version string, deps []string,
	h func(s *service, w http.ResponseWriter, r *http.Request)) *service {
	t.Helper()
	return startServiceWith(t, ts, sidecar.Config{}, name, version, deps, h)
}

func startServiceWith(t *testing.T, ts *servertest.Server, cfg sidecar.Config, name, version string, deps []string,
	h func(s *service, w http.ResponseWriter, r *http.Request)) *service {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.InstanceID, cfg.Service, cfg.Version = name+"-"+version, name, version
	cfg.Address, cfg.Dependencies = lis.Addr().String(), deps
	s := &service{client: startClient(t, ts, cfg), name: name, version: version, addr: lis.Addr().String()}
	s.http = &http.Client{Transport: sidecar.Transport(s.Client, nil)}
	srv := &http.Server{Handler: sidecar.Middleware(s.Client)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h(s, w, r)
	}))}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() }) // runs before the client's Close
	return s
}

// get GETs url with the service's client in the context of r.
func (s *service) get(r *http.Request, url string) (string, error) {
	return get(r.Context(), s.http, url, nil)
}

func get(ctx context.Context, c *http.Client, url string, h http.Header) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

// proxy calls to the next service and answers with what it said.
func relay(url string) func(*service, http.ResponseWriter, *http.Request) {
	return func(s *service, w http.ResponseWriter, r *http.Request) {
		out, err := s.get(r, url)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprint(w, out)
	}
}

// txn returns the live transaction id, or nil.
func txn(ts *servertest.Server, id string) *pb.Transaction {
	for _, x := range ts.Txns("").Transactions {
		if x.TxnId == id {
			return x
		}
	}
	return nil
}

// running lists the running sub-transactions of x as "service:sub" sorted.
func running(x *pb.Transaction) []string {
	var out []string
	for _, s := range x.GetRunning() {
		out = append(out, fmt.Sprintf("%s:%016x", s.Service, s.Id))
	}
	slices.Sort(out)
	return out
}

func subs(pairs ...any) []string {
	var out []string
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, fmt.Sprintf("%s:%016x", pairs[i], pairs[i+1]))
	}
	slices.Sort(out)
	return out
}

func used(x *pb.Transaction) []string {
	var out []string
	for _, u := range x.GetUsed() {
		out = append(out, u.Service+"@"+u.Version)
	}
	slices.Sort(out)
	return out
}

// A request through a chain front -> mid -> back of services with
// Middleware and Transport is one transaction on the coordinator, with one
// running sub-transaction per service, the ones each handler runs as,
// while back's handler runs; it ends once the request is served.
func TestChainThroughHTTPIsOneTransaction(t *testing.T) {
	ts := servertest.Start(t, "")
	gate := make(chan struct{})
	seen := make(chan sidecar.Txn, 3)
	record := func(h func(*service, http.ResponseWriter, *http.Request)) func(*service, http.ResponseWriter, *http.Request) {
		return func(s *service, w http.ResponseWriter, r *http.Request) {
			tx, _ := sidecar.FromContext(r.Context())
			seen <- tx
			h(s, w, r)
		}
	}
	back := startService(t, ts, "back", "v1", nil, record(func(_ *service, w http.ResponseWriter, _ *http.Request) {
		<-gate
		fmt.Fprint(w, "from back")
	}))
	mid := startService(t, ts, "mid", "v1", []string{"back"}, record(relay("http://back/y")))
	front := startService(t, ts, "front", "v1", []string{"mid"}, record(relay("http://mid:8080/x")))

	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	resp := make(chan error, 1)
	go func() {
		out, err := get(ctx, http.DefaultClient, "http://"+front.addr+"/", nil)
		if err == nil && out != "from back" {
			err = fmt.Errorf("answer %q", out)
		}
		resp <- err
	}()
	tf, tm, tb := <-seen, <-seen, <-seen
	if tf.ID == "" || tm.ID != tf.ID || tb.ID != tf.ID {
		t.Fatalf("transactions front %q mid %q back %q, want one", tf.ID, tm.ID, tb.ID)
	}
	want := subs("front", tf.Sub, "mid", tm.Sub, "back", tb.Sub)
	var x *pb.Transaction
	servertest.Eventually(t, within, "the coordinator to see the three calls", func() bool {
		x = txn(ts, tf.ID)
		return slices.Equal(running(x), want)
	})
	if x.Entry != "front" || x.Owner != "front-v1" || x.Legacy || x.Implicit ||
		!slices.Equal(used(x), []string{"back@v1", "front@v1", "mid@v1"}) {
		t.Fatalf("transaction = %v", x)
	}
	if total := ts.Txns("").Total; total != 1 {
		t.Fatalf("%d live transactions, want 1", total)
	}
	if f := ts.FreeREST("back"); f.Free || len(f.Blockers) != 1 || f.Blockers[0].TxnId != tf.ID {
		t.Fatalf("back's freeness = %v, want blocked by %s", f, tf.ID)
	}
	close(gate)
	if err := <-resp; err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, within, "the transaction to end", func() bool { return ts.Txns("").Total == 0 })
	if !ts.FreeREST("back").Free {
		t.Fatal("back not free after the transaction ended")
	}
	noRejections(t, front.client, mid.client, back.client)
}

// Only the mesh's own headers (x-coordinator-txn and x-coordinator-sub,
// both valid) make a request join the transaction they name, as the
// sub-transaction the caller created; the tracing headers that come along
// are its correlation, and go on to the next call the way they came. A
// request with tracing headers only (a valid traceparent, B3, x-request-id
// from outside the mesh) or incomplete mesh headers is an entry: a new root
// with a fresh id, the outside id kept as its correlation, never a
// transaction of the coordinator.
func TestPropagationHeaders(t *testing.T) {
	ts := servertest.Start(t, "")
	type hop struct {
		txn sidecar.Txn
		hdr http.Header
	}
	atBack := make(chan hop, 1)
	back := startService(t, ts, "back", "v1", nil, func(_ *service, w http.ResponseWriter, r *http.Request) {
		tx, _ := sidecar.FromContext(r.Context())
		atBack <- hop{tx, r.Header.Clone()}
	})
	atMid := make(chan sidecar.Txn, 1)
	mid := startService(t, ts, "mid", "v1", []string{"back"}, func(s *service, w http.ResponseWriter, r *http.Request) {
		tx, _ := sidecar.FromContext(r.Context())
		atMid <- tx
		relay("http://back/")(s, w, r)
	})
	edge := ts.Sidecar("edge-1", "edge", "v1", "mid") // the caller's sidecar

	var (
		tp1, tp2, b3long = txnID(1), txnID(2), txnID(3)
		outside          = txnID(4) // a trace id from outside the mesh
		b3short          = "a3ce929d0e0e4736"
		span             = func(sub uint64) string { return fmt.Sprintf("%016x", sub) }
		mesh             = func(id string, sub uint64, h http.Header) http.Header {
			if h == nil {
				h = http.Header{}
			}
			h.Set("X-Coordinator-Txn", id)
			h.Set("X-Coordinator-Sub", span(sub))
			return h
		}
	)
	for i, tc := range []struct {
		name        string
		txn         string // the transaction the request joins; "" for an entry
		header      func(sub uint64) http.Header
		correlation string   // the Txn's at mid and back
		wantHdrs    []string // propagation headers back must get
		trace       string   // the trace id of back's traceparent ("" for mid's transaction)
		flags       string   // of back's traceparent
		b3, rid     string   // back's B3 trace id and x-request-id
	}{
		{name: "mesh headers join", txn: tp1,
			header:   func(sub uint64) http.Header { return mesh(tp1, sub, nil) },
			wantHdrs: []string{"Traceparent", "X-Coordinator-Sub", "X-Coordinator-Txn"}, flags: "01"},
		{name: "mesh headers join any printable id", txn: "req-42",
			header:   func(sub uint64) http.Header { return mesh("req-42", sub, nil) },
			wantHdrs: []string{"X-Coordinator-Sub", "X-Coordinator-Txn"}},
		{name: "mesh headers with an outside traceparent: joined, the trace continues", txn: tp2, correlation: outside,
			header: func(sub uint64) http.Header {
				return mesh(tp2, sub, http.Header{"Traceparent": {"00-" + outside + "-00f067aa0ba902b7-00"}})
			},
			wantHdrs: []string{"Traceparent", "X-Coordinator-Sub", "X-Coordinator-Txn"}, trace: outside, flags: "00"},
		{name: "mesh headers with b3 128-bit", txn: txnID(5), correlation: b3long,
			header: func(sub uint64) http.Header {
				return mesh(txnID(5), sub, http.Header{"X-B3-Traceid": {b3long}, "X-B3-Spanid": {"00f067aa0ba902b7"}, "X-B3-Sampled": {"1"}})
			},
			wantHdrs: []string{"X-B3-Spanid", "X-B3-Traceid", "X-Coordinator-Sub", "X-Coordinator-Txn"}, b3: b3long},
		{name: "mesh headers with b3 64-bit and x-request-id", txn: txnID(6), correlation: b3short,
			header: func(sub uint64) http.Header {
				return mesh(txnID(6), sub, http.Header{"X-B3-Traceid": {b3short}, "X-B3-Spanid": {"00f067aa0ba902b7"}, "X-Request-Id": {"req-7"}})
			},
			wantHdrs: []string{"X-B3-Spanid", "X-B3-Traceid", "X-Coordinator-Sub", "X-Coordinator-Txn", "X-Request-Id"}, b3: b3short, rid: "req-7"},
		{name: "a valid traceparent alone from outside: entry", correlation: outside,
			header: func(sub uint64) http.Header {
				return http.Header{"Traceparent": {"00-" + outside + "-" + span(sub) + "-01"}}
			},
			wantHdrs: []string{"Traceparent", "X-Coordinator-Sub", "X-Coordinator-Txn"}, trace: outside, flags: "01"},
		{name: "traceparent and x-coordinator-sub without x-coordinator-txn: entry", correlation: outside,
			header: func(sub uint64) http.Header {
				return http.Header{"Traceparent": {"00-" + outside + "-00f067aa0ba902b7-01"}, "X-Coordinator-Sub": {span(sub)}}
			},
			wantHdrs: []string{"Traceparent", "X-Coordinator-Sub", "X-Coordinator-Txn"}, trace: outside, flags: "01"},
		{name: "b3 alone: entry", correlation: b3long,
			header: func(sub uint64) http.Header {
				return http.Header{"X-B3-Traceid": {b3long}, "X-B3-Spanid": {span(sub)}}
			},
			wantHdrs: []string{"X-B3-Spanid", "X-B3-Traceid", "X-Coordinator-Sub", "X-Coordinator-Txn"}, b3: b3long},
		{name: "x-request-id alone: entry", correlation: "from-a-browser",
			header:   func(uint64) http.Header { return http.Header{"X-Request-Id": {"from-a-browser"}} },
			wantHdrs: []string{"Traceparent", "X-Coordinator-Sub", "X-Coordinator-Txn", "X-Request-Id"}, flags: "01", rid: "from-a-browser"},
		{name: "x-coordinator-txn with an invalid sub: entry",
			header: func(sub uint64) http.Header {
				return http.Header{"X-Coordinator-Txn": {tp1}, "X-Coordinator-Sub": {"0000000000000000"}}
			},
			wantHdrs: []string{"Traceparent", "X-Coordinator-Sub", "X-Coordinator-Txn"}, flags: "01"},
		{name: "x-coordinator-txn not printable: entry",
			header:   func(sub uint64) http.Header { return mesh("a b", sub, nil) },
			wantHdrs: []string{"Traceparent", "X-Coordinator-Sub", "X-Coordinator-Txn"}, flags: "01"},
		{name: "no headers: entry",
			header:   func(uint64) http.Header { return nil },
			wantHdrs: []string{"Traceparent", "X-Coordinator-Sub", "X-Coordinator-Txn"}, flags: "01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := tc.txn
			root, sub := uint64(100+i), uint64(0xabc0+i)
			if id != "" {
				servertest.Send(t, edge, simsidecar.Begin(id, root), simsidecar.Call(id, root, "mid", sub))
			}
			ctx, cancel := context.WithTimeout(context.Background(), within)
			defer cancel()
			if _, err := get(ctx, http.DefaultClient, "http://"+mid.addr+"/", tc.header(sub)); err != nil {
				t.Fatal(err)
			}
			m, b := <-atMid, <-atBack
			if id == "" {
				if len(m.ID) != 32 || m.ID == outside || m.ID == b3long || m.ID == tp1 || m.Sub == sub {
					t.Fatalf("entry ran as %s/%016x, want a new root with a fresh id", m.ID, m.Sub)
				}
				servertest.Eventually(t, within, "the entry's transaction to end", func() bool { return txn(ts, m.ID) == nil })
				for _, other := range []string{outside, b3long, tp1, "from-a-browser"} {
					if txn(ts, other) != nil {
						t.Fatalf("the coordinator has a transaction %s, named by an outside header", other)
					}
				}
			} else if m.ID != id || m.Sub != sub {
				t.Fatalf("mid ran as %s/%016x, want %s/%016x", m.ID, m.Sub, id, sub)
			}
			if m.Correlation != tc.correlation || b.txn.Correlation != tc.correlation {
				t.Fatalf("correlation at mid %q, at back %q; want %q", m.Correlation, b.txn.Correlation, tc.correlation)
			}
			if b.txn.ID != m.ID || b.txn.Sub == 0 || b.txn.Sub == m.Sub {
				t.Fatalf("back ran as %s/%016x, want a new sub-transaction of %s", b.txn.ID, b.txn.Sub, m.ID)
			}
			var got []string
			for k := range b.hdr {
				if k == "Traceparent" || strings.HasPrefix(k, "X-") && k != "X-B3-Sampled" {
					got = append(got, k)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.wantHdrs) {
				t.Fatalf("back got headers %v, want %v", got, tc.wantHdrs)
			}
			span := span(b.txn.Sub)
			if v, w := b.hdr.Get("X-Coordinator-Sub"), b.hdr.Get("X-Coordinator-Txn"); v != span || w != m.ID {
				t.Fatalf("mesh headers %s/%s, want %s/%s", w, v, m.ID, span)
			}
			trace := tc.trace
			if trace == "" {
				trace = m.ID
			}
			if v := b.hdr.Get("Traceparent"); v != "" && v != "00-"+trace+"-"+span+"-"+tc.flags {
				t.Fatalf("traceparent = %q, want 00-%s-%s-%s", v, trace, span, tc.flags)
			}
			if v := b.hdr.Get("X-B3-Traceid"); v != tc.b3 || v != "" && b.hdr.Get("X-B3-Spanid") != span {
				t.Fatalf("b3 = %q/%q, want %s/%s", v, b.hdr.Get("X-B3-Spanid"), tc.b3, span)
			}
			if v := b.hdr.Get("X-Request-Id"); v != tc.rid {
				t.Fatalf("x-request-id = %q, want %q", v, tc.rid)
			}
			if id == "" {
				return
			}
			// mid's CALL named mid's sub as the caller: the coordinator has
			// exactly the edge's root and mid's sub running (a wrong caller
			// sub would have started an implicit one at mid).
			servertest.Eventually(t, within, "mid's call to back", func() bool {
				x := txn(ts, id)
				return slices.Equal(running(x), subs("edge", root, "mid", sub)) && slices.Contains(used(x), "back@v1")
			})
			servertest.Send(t, edge, simsidecar.Return(id, sub), simsidecar.End(id))
			servertest.Eventually(t, within, "the end", func() bool { return txn(ts, id) == nil })
		})
	}
	noRejections(t, mid.client, back.client)
}

// txnID returns a W3C trace id.
func txnID(i int) string { return fmt.Sprintf("4bf92f3577b34da6a3ce929d0e0e%04x", i) }

// A request without a transaction, and one inside a transaction to a host
// that is no service of the coordinator, go out untouched.
func TestTransportPassesThrough(t *testing.T) {
	ts := servertest.Start(t, "")
	hdrs := make(chan http.Header, 2)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	external := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hdrs <- r.Header.Clone()
		fmt.Fprint(w, "external")
	})}
	go func() { _ = external.Serve(lis) }()
	t.Cleanup(func() { _ = external.Close() })
	url := "http://" + lis.Addr().String() + "/"

	s := startService(t, ts, "app", "v1", nil, relay(url))
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if out, err := get(ctx, s.http, url, nil); err != nil || out != "external" {
		t.Fatalf("request without a transaction: %q, %v", out, err)
	}
	if out, err := get(ctx, http.DefaultClient, "http://"+s.addr+"/", nil); err != nil || out != "external" {
		t.Fatalf("request to an external host in a transaction: %q, %v", out, err)
	}
	for range 2 {
		if h := <-hdrs; h.Get("Traceparent") != "" || h.Get("X-Coordinator-Sub") != "" {
			t.Fatalf("external host got propagation headers: %v", h)
		}
	}
	servertest.Eventually(t, within, "the entry to end", func() bool { return ts.Txns("").Total == 0 })
	noRejections(t, s.client)
}

// An event the coordinator rejects is counted and logged with its code.
func TestRejectedEventsAreCounted(t *testing.T) {
	ts := servertest.Start(t, "")
	c := startClient(t, ts, sidecar.Config{InstanceID: "a-1", Service: "a", Version: "v1"})
	ctx, _ := c.Begin(context.Background())
	sidecar.Done(ctx, "no-such-service")
	servertest.Eventually(t, within, "the rejection", func() bool { return c.Stats().Rejected == 1 })
	if got := c.log.rejections(); len(got) != 1 || !strings.HasPrefix(got[0], "InvalidArgument ") {
		t.Fatalf("logged rejections %v, want one InvalidArgument", got)
	}
	if err := c.End(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.End(ctx); !errors.Is(err, sidecar.ErrNotRoot) {
		t.Fatalf("second End = %v, want ErrNotRoot", err)
	}
	servertest.Eventually(t, within, "the end", func() bool { return ts.Txns("").Total == 0 && c.Stats().Queued == 0 })
	if st := c.Stats(); st.Rejected != 1 || st.Duplicates != 0 || st.Acked != 3 {
		t.Fatalf("stats = %+v, want 3 acked, 1 rejected", st)
	}
}

// Events the coordinator refuses as a run (past the session's event rate:
// one error from its first seq through its last) count one each.
func TestRejectedRunCountsEachEvent(t *testing.T) {
	ts := servertest.Start(t, "", func(c *server.Config) {
		c.Coordinator.MaxEventsPerSecond = 0.001 // no token comes back during the test
		c.Coordinator.EventBurst = 2
	})
	c := startClient(t, ts, sidecar.Config{InstanceID: "a-1", Service: "a", Version: "v1"})
	for range 5 {
		ctx, _ := c.Begin(context.Background())
		if err := c.End(ctx); err != nil {
			t.Fatal(err)
		}
	}
	servertest.Eventually(t, within, "every event acknowledged", func() bool { return c.Stats().Queued == 0 })
	if st := c.Stats(); st.Acked != 10 || st.Rejected != 8 {
		t.Fatalf("stats = %+v, want 10 acked, 8 rejected (2 within the burst)", st)
	}
}
