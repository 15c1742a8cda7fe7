// Command abuse is a bounded soak: legitimate load (500 transactions/s of
// simulated services on the Go SDK, the update bench's graph, checked by
// loadsim's version-consistency oracle) runs against a coordinator in a
// process of its own, first alone (baseline) and then next to one hostile
// session that pushes every per-session quota at least tenfold, opens ten
// times the streams a peer may, registers ten times the sessions a peer and
// all peers may hold (sessions that linger: their streams dropped, their
// leases running), and posts REST bodies ten times the limit.
// In each phase a CV update of svc-d is held in DRAINING, so every call to
// svc-d waits for the coordinator's decision: their p99 is what the hostile
// session could slow down. It prints one line per quota with how often it
// refused, then:
//
//	hostile_refused=N baseline_p99_ms=Q legit_p99_ms=P legit_failed=F rss_mb=R rss_growth_mb=G violations=V
//
// (G: growth of the coordinator's RSS after the first 30 s of the hostile
// phase). With -no-hostile the second phase runs without the hostile
// session: P against Q then says what the longer second phase alone does on
// this machine. The quotas are set low (flags below) so that ten times each is
// reached in seconds; the defaults are documented in docs/limits.md.
//
// The event rate is flooded last, for the rest of the phase (flood.go):
// batches of ENDs of transactions nobody began, due at ten times the
// session's rate, sent without waiting for their Acks. Every one of them is
// rejected, so the flood pushes the session's rejected-events budget too
// (hundreds of times over). The coordinator stops reading a session over
// its rate until its bucket refills, and one in debt on its rejected-events
// budget until the debt is repaid (refusing whole a batch read before
// then); it closes the stream of one that stayed over its rate for 30 s
// (--over-rate-close-after); the flood then reopens it after the SDK's
// backoff. So most of what it attempts is never sent: Send blocks in HTTP/2
// flow control and the batches due meanwhile are held back. The quota lines
// of session_event_rate and session_rejected_events count what it attempted
// as pushed; the line
//
//	event_rate_flood: attempted=A sent=S held_back=H acked=K refused_in_acks=R refused_budget=B unacked=U streams_closed=C
//
// says how much of it reached the coordinator (S), how much the Acks refused
// for the rate (R) and for the rejected-events budget (B), and how many
// times the stream was closed (C); hostile_refused counts the coordinator's
// refusals (coordinator_quota_refusals_total), which are of what it read.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof" // the child's profiles, with -profile
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/internal/benchproc"
	"github.com/coordinator/coordinator/internal/loadsim"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The update bench's graph; svc-d is updated in each phase.
var graph = loadsim.Graph{"svc-a": {"svc-b", "svc-c"}, "svc-b": {"svc-d", "svc-e"}, "svc-c": {"svc-d"}, "svc-d": {"svc-f"}}

// The quotas of the soak (coordinatord flags of the same names).
const (
	liveTxnsPerSession  = 2_000  // --max-live-txns-per-session
	newServices         = 100    // --max-new-services-per-session
	newVersions         = 20     // --max-new-versions-per-session
	learnedEdges        = 100    // --max-learned-edges-per-session
	eventsPerSecond     = 20_000 // --max-events-per-second: above the svc-d sidecar's ~9,000/s
	eventBurst          = 20_000 // --event-burst
	rejectedPerSecond   = 100    // --max-rejected-events-per-second
	rejectedBurst       = 1000   // --rejected-event-burst
	streamsPerPeer      = 20     // --max-streams-per-peer
	sessionsPerPeer     = 50     // --max-sessions-per-peer: above the legitimate load's sidecars (one peer)
	maxSessions         = 500    // --max-sessions
	hostileAddr         = "127.0.0.2"
	push                = 10 // each quota is pushed this many times over
	maxRequestBodyBytes = server.DefaultMaxRequestBytes
)

func main() {
	rate := flag.Int("rate", 500, "legitimate transactions per second")
	baseline := flag.Duration("baseline", 20*time.Second, "length of the phase without the hostile session")
	hostile := flag.Duration("hostile", 60*time.Second, "length of the phase with it (at least 30s: RSS growth is measured after its first 30 s)")
	serve := flag.String("serve", "", "internal: run the coordinator on this data directory and print its addresses")
	servePprof := flag.Bool("serve-pprof", false, "internal: with -serve, also serve /debug/pprof and print its address")
	control := flag.Bool("no-hostile", false, "a control run: the second phase without the hostile session (what the phase alone does to the p99 on this machine)")
	profile := flag.String("profile", "", "write the coordinator's heap and CPU profiles into this directory (diagnosis; the figures are then not comparable)")
	flag.Parse()
	log.SetFlags(0)
	if *serve != "" {
		runCoordinator(*serve, *servePprof)
		return
	}
	if *hostile < 40*time.Second {
		log.Fatalf("-hostile %v: want at least 40s", *hostile)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "bench-abuse-")
	check(err)
	defer os.RemoveAll(dir)
	co := startCoordinator(dir, *profile != "")
	defer co.Stop()
	prof := &profiler{co: co, dir: *profile}

	instances := []string{"svc-a@v1", "svc-b@v1", "svc-c@v1", "svc-d@v1", "svc-e@v1", "svc-f@v1", "svc-d@v2"}
	s, err := loadsim.Start(ctx, loadsim.Config{Coordinators: []string{co.grpc}, Graph: graph, Instances: instances, Entry: "svc-a"})
	check(err)
	defer s.Close()
	time.Sleep(200 * time.Millisecond)
	stopLoad := s.Load(ctx, *rate, 50)
	defer stopLoad()
	conn, err := grpc.NewClient(co.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	check(err)
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)

	// Baseline: the update held in DRAINING, no hostile session.
	baseLoad, baseCPU := co.StartLoad(), co.startCPU()
	baseP99, baseFailed := phase(ctx, s, admin, "v2", *baseline, func(pctx context.Context) { prof.cpu(pctx, "baseline", 3*time.Second) }, nil)
	baseRejected := legitRejected(s, instances)
	log.Printf("baseline: decided calls p99 %v, failed %d, events rejected %d, rss %d MB (%v; %v)", baseP99, baseFailed, baseRejected, co.RSSMB(), baseLoad, baseCPU)
	prof.heap("baseline-end")

	// Hostile: the same, with the hostile session from the start.
	var rss30, rssEnd int
	h := &hostileRun{co: co}
	hostileLoad, hostileCPU := co.StartLoad(), co.startCPU()
	legitP99, _ := phase(ctx, s, admin, "v1", *hostile, func(pctx context.Context) {
		go func() {
			select {
			case <-time.After(30 * time.Second):
				rss30 = co.RSSMB()
				log.Printf("hostile phase at 30 s: rss %d MB, heap in use %.0f MB", rss30, co.metric("go_memstats_heap_inuse_bytes")/(1<<20))
				prof.heap("hostile-30s")
			case <-pctx.Done():
			}
		}()
		go prof.cpu(pctx, "hostile", 12*time.Second) // in the event flood
		if *control {
			<-pctx.Done()
			return
		}
		h.run(pctx)
	}, func() { // measured before the hostile session goes
		rssEnd = co.RSSMB()
		log.Printf("hostile phase at its end: rss %d MB, heap in use %.0f MB, legitimate events rejected %d (%v; %v)", rssEnd,
			co.metric("go_memstats_heap_inuse_bytes")/(1<<20), legitRejected(s, instances)-baseRejected, hostileLoad, hostileCPU)
		prof.heap("hostile-end")
		h.deregister()
	})
	failed := s.Failed() - baseFailed
	if v := s.FirstViolation(); v != "" {
		log.Printf("first violation: %s", v)
	}
	if err := s.FirstError(); err != nil && failed > 0 {
		log.Printf("first legitimate failure: %v", err)
	}
	refused := h.report(co)
	if n := h.sendErrs.Load(); n > 0 {
		log.Printf("hostile session: %d batches not acknowledged (not counted as pushed)", n)
	}
	fmt.Printf("hostile_refused=%d baseline_p99_ms=%.2f legit_p99_ms=%.2f legit_failed=%d rss_mb=%d rss_growth_mb=%d violations=%d\n",
		refused, ms(baseP99), ms(legitP99), failed, rssEnd, rssEnd-rss30, s.Violations())
}

// legitRejected is how many events the coordinator rejected from the
// legitimate sidecars so far (the SDK does not resend them): none should be,
// the soak's quotas are above what they send.
func legitRejected(s *loadsim.Sim, instances []string) uint64 {
	var n uint64
	for _, inst := range instances {
		n += s.Client(inst).Stats().Rejected
	}
	return n
}

// phase runs a CV update of svc-d to `to` held in DRAINING for d (a
// transaction keeps the old version in use), with extra running next to
// it, and returns the p99 of the calls the coordinator decided meanwhile
// and the legitimate failures so far.
func phase(ctx context.Context, s *loadsim.Sim, admin pb.AdminServiceClient, to string, d time.Duration, extra func(context.Context), after func()) (time.Duration, int64) {
	from := "v1"
	if to == "v1" {
		from = "v2"
	}
	entry := s.Client("svc-c@v1")
	tctx, _ := entry.Begin(ctx)
	call, err := entry.Route(tctx, "svc-d") // uses svc-d@from and may call it again
	check(err)
	call.Finish()
	_, _ = s.Latencies(true)
	u, err := admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "svc-d", ToVersion: to, Strategy: pb.Strategy_STRATEGY_CV})
	check(err)
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	if extra != nil {
		wg.Go(func() { extra(pctx) })
	}
	// The p99 of each 10 s window too: a trend over the run (the same in
	// both phases) is not the hostile session's.
	var decided []time.Duration
	window := func(last bool) {
		_, w := s.Latencies(true)
		decided = append(decided, w...)
		if len(w) > 0 {
			slices.Sort(w)
			log.Printf("  svc-d %s->%s: 10 s window p99 %.2f ms (%d decided calls)%s", from, to, ms(w[len(w)*99/100]), len(w), map[bool]string{true: ", last"}[last])
		}
	}
	tick := time.NewTicker(10 * time.Second)
	for pctx.Err() == nil {
		select {
		case <-tick.C:
			window(false)
		case <-pctx.Done():
		}
	}
	tick.Stop()
	wg.Wait()
	window(true)
	if after != nil {
		after()
	}
	entry.End(tctx) // svc-d@from drains: the update ends DONE
	for {
		g, err := admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		check(err)
		if g.FinishedAt != nil && g.Progress == nil {
			if g.Phase != pb.Phase_PHASE_DONE {
				log.Fatalf("update of svc-d %s -> %s ended %s: %s", from, to, g.Phase, g.Reason)
			}
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	slices.Sort(decided)
	if len(decided) == 0 {
		log.Fatalf("no call to svc-d was decided during the %v phase", d)
	}
	return decided[len(decided)*99/100], s.Failed()
}

// hostileRun is one hostile session and what it pushed.
type hostileRun struct {
	co     *coordinatorProc
	pushed sync.Map // quota -> *atomic.Int64
	// refused413 and refusedStreams are counted here: the REST body limit
	// and the stream limit refuse before any coordinator metric.
	refused413, refusedStreams atomic.Int64
	sendErrs                   atomic.Int64
	flood                      *flood // the event-rate flood (flood.go)
	cur                        *atomic.Pointer[simsidecar.Sidecar]
	conn                       *grpc.ClientConn
}

func (h *hostileRun) add(quota string, n int64) {
	v, _ := h.pushed.LoadOrStore(quota, new(atomic.Int64))
	v.(*atomic.Int64).Add(n)
}

// run pushes every quota, each from its own goroutine, until ctx ends.
func (h *hostileRun) run(ctx context.Context) {
	conn, err := grpc.NewClient(h.co.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	check(err)
	h.conn = conn // closed by deregister, after the phase
	// Services it may call without teaching an edge: declared by another
	// service (a setup registration), so that calling them only pushes
	// the learned-edge quota.
	var decl []string
	for i := range push * learnedEdges {
		decl = append(decl, fmt.Sprintf("declared-%d", i))
	}
	setup, _, err := simsidecar.Connect(ctx, conn, &pb.Register{InstanceId: "hostile-setup", Service: "library", Version: "v1",
		Address: "127.0.0.1:1", Dependencies: decl})
	check(err)
	setup.Close()
	reg := &pb.Register{InstanceId: "hostile-1", Service: "hostile", Version: "v1", Address: "127.0.0.1:1",
		Dependencies: []string{"svc-f"}}
	sc, _, err := simsidecar.Connect(ctx, conn, reg)
	check(err)
	cur := new(atomic.Pointer[simsidecar.Sidecar]) // the flood reconnects
	cur.Store(sc)
	h.cur = cur // deregistered, then closed, after the phase
	h.flood = &flood{conn: conn, reg: reg, cur: cur}
	var wg sync.WaitGroup
	wg.Go(func() { // a misbehaving sidecar, but a live one: it heartbeats
		for ctx.Err() == nil {
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, _ = cur.Load().Heartbeat(hctx)
			cancel()
			pace(ctx, time.Second)
		}
	})
	wg.Go(func() { h.streams(ctx) })
	wg.Go(func() { h.bodies(ctx) })
	wg.Go(func() { h.sessions(ctx) })
	// The session's own quotas one after the other, each under its event
	// rate (so that each is refused by its own quota), then the rate
	// itself, flooded for the rest of the phase.
	h.namesAndEdges(ctx, sc) // its first 100 names teach 100 edges too
	h.learnEdges(ctx, sc, decl)
	h.liveTxns(ctx, sc)
	h.flood.run(ctx)
	h.add("session_event_rate", h.flood.attempted.Load())
	h.add("session_rejected_events", h.flood.attempted.Load()) // every one of them is rejected
	wg.Wait()
}

// deregister shuts the hostile session down as a sidecar does, after the
// phase's measurements: its transactions end now. One of them taught
// undeclared edges and is legacy (DESIGN.md §3): while it lives, the
// phase's update cannot drain. The Deregister waits behind what the flood
// queued, read at the rate the session's budget allows.
func (h *hostileRun) deregister() {
	if h.conn == nil {
		return
	}
	defer h.conn.Close()
	if h.cur == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := h.cur.Load().Deregister(ctx, "bench/abuse: hostile phase over"); err != nil {
		log.Printf("hostile session: deregister: %v (stream: %v)", err, h.cur.Load().Err())
	}
	h.cur.Load().Close()
}

// send sends a batch and waits for its Ack (bounded), so that the hostile
// session never has more than one batch in flight per goroutine; it
// reports whether the batch was acknowledged (and so pushed).
func (h *hostileRun) send(ctx context.Context, sc *simsidecar.Sidecar, evs []*pb.Event) bool {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := sc.Send(sctx, evs...); err != nil {
		if ctx.Err() == nil && h.sendErrs.Add(1) == 1 {
			log.Printf("hostile session: a batch was not acknowledged: %v", err)
		}
		return false
	}
	return true
}

// liveTxns begins ten times the live transactions a session may own.
func (h *hostileRun) liveTxns(ctx context.Context, sc *simsidecar.Sidecar) {
	for i := 0; i < push*liveTxnsPerSession && ctx.Err() == nil; i += 500 {
		var evs []*pb.Event
		for j := i; j < i+500; j++ {
			evs = append(evs, simsidecar.Begin(fmt.Sprintf("hostile-live-%d", j), 1))
		}
		if h.send(ctx, sc, evs) {
			h.add("session_live_txns", int64(len(evs)))
		}
		pace(ctx, 200*time.Millisecond) // 2,500 events/s: under the rate quota
	}
}

// namesAndEdges calls ten times the services, versions and undeclared
// edges a session may introduce, inside one transaction of its own.
func (h *hostileRun) namesAndEdges(ctx context.Context, sc *simsidecar.Sidecar) {
	txn := "hostile-names"
	h.send(ctx, sc, []*pb.Event{simsidecar.Begin(txn, 1)})
	sub := uint64(2)
	call := func(svc, version string) *pb.Event {
		ev := simsidecar.Call(txn, 1, svc, sub)
		ev.Version = version
		sub++
		return ev
	}
	for i := 0; i < push*newServices && ctx.Err() == nil; i += 100 {
		var evs []*pb.Event
		for j := i; j < i+100; j++ {
			evs = append(evs, call(fmt.Sprintf("invented-%d", j), ""))
		}
		if h.send(ctx, sc, evs) {
			h.add("session_services", int64(len(evs)))
		}
		pace(ctx, 50*time.Millisecond)
	}
	for i := 0; i < push*newVersions && ctx.Err() == nil; i += 50 {
		var evs []*pb.Event
		for j := i; j < i+50; j++ {
			evs = append(evs, call("svc-f", fmt.Sprintf("v-invented-%d", j)))
		}
		if h.send(ctx, sc, evs) {
			h.add("session_versions", int64(len(evs)))
		}
		pace(ctx, 50*time.Millisecond)
	}
}

// learnEdges calls, in a transaction of its own, services another
// service declared and this one did not: each call teaches an edge.
func (h *hostileRun) learnEdges(ctx context.Context, sc *simsidecar.Sidecar, to []string) {
	txn := "hostile-edges"
	h.send(ctx, sc, []*pb.Event{simsidecar.Begin(txn, 1)})
	for i := 0; i < len(to) && ctx.Err() == nil; i += 100 {
		var evs []*pb.Event
		for j := i; j < min(i+100, len(to)); j++ {
			evs = append(evs, simsidecar.Call(txn, 1, to[j], uint64(2+j)))
		}
		if h.send(ctx, sc, evs) {
			h.add("session_learned_edges", int64(len(evs)))
		}
		pace(ctx, 50*time.Millisecond)
	}
}

// streams opens ten times the streams one peer may have, from another
// loopback address, and never registers them.
func (h *hostileRun) streams(ctx context.Context) {
	conn := h.dialFrom(hostileAddr)
	defer conn.Close()
	cl := pb.NewSidecarServiceClient(conn)
	var wg sync.WaitGroup
	for round := 0; ctx.Err() == nil; round++ {
		for range push * streamsPerPeer {
			st, err := cl.Connect(ctx)
			h.add("streams_per_peer", 1)
			if err != nil {
				continue
			}
			wg.Go(func() {
				for {
					if _, err := st.Recv(); err != nil {
						if status.Code(err) == codes.ResourceExhausted {
							h.refusedStreams.Add(1)
						}
						return
					}
				}
			})
		}
		pace(ctx, 12*time.Second) // the idle ones end at the Register deadline (10 s)
	}
	wg.Wait()
}

// dialFrom is a connection to the coordinator from loopback address addr
// (a peer of its own for the per-peer limits).
func (h *hostileRun) dialFrom(addr string) *grpc.ClientConn {
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(addr)}}
	conn, err := grpc.NewClient(h.co.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return dialer.DialContext(ctx, "tcp", a) }))
	check(err)
	return conn
}

// sessions registers new instances with minute-long leases and drops
// each stream at once, so that every session lingers until its lease
// expires: ten times the sessions one peer may hold from one loopback
// address, then ten times the sessions in all from as many more
// addresses as that takes, each under the per-peer limit (so that the
// total refuses them).
func (h *hostileRun) sessions(ctx context.Context) {
	n := 0
	from := func(addr string, count int, quota string) {
		conn := h.dialFrom(addr)
		defer conn.Close()
		for range count {
			if ctx.Err() != nil {
				return
			}
			n++
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			sc, _, err := simsidecar.Connect(rctx, conn, &pb.Register{InstanceId: fmt.Sprintf("hostile-lingering-%d", n),
				Service: "hostile-lingering", Version: "v1", Address: "127.0.0.1:1",
				HeartbeatInterval: durationpb.New(time.Minute), AllowedMisses: 1})
			cancel()
			h.add(quota, 1)
			if err == nil {
				sc.Close()
			}
		}
	}
	from("127.0.0.3", push*sessionsPerPeer, "peer_sessions")
	for i := 0; i*sessionsPerPeer < push*maxSessions && ctx.Err() == nil; i++ {
		from(fmt.Sprintf("127.0.1.%d", i+1), sessionsPerPeer, "sessions")
	}
}

// bodies posts REST bodies ten times the limit, once a second.
func (h *hostileRun) bodies(ctx context.Context) {
	body := bytes.Repeat([]byte("x"), push*maxRequestBodyBytes)
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+h.co.http+"/v1/services/svc-d/updates", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		h.add("request_body_bytes", 1)
		if err == nil {
			if resp.StatusCode == http.StatusRequestEntityTooLarge {
				h.refused413.Add(1)
			}
			resp.Body.Close()
		}
		pace(ctx, time.Second)
	}
}

// report prints a line per quota (what was pushed, how often the
// coordinator refused) and returns the refusals in all.
func (h *hostileRun) report(co *coordinatorProc) int64 {
	refusals := co.metricByLabel("coordinator_quota_refusals_total", "quota")
	refusals["request_body_bytes"] = float64(h.refused413.Load())
	refusals["streams_per_peer"] = float64(h.refusedStreams.Load())
	limits := map[string]int{
		"session_live_txns": liveTxnsPerSession, "session_services": newServices, "session_versions": newVersions,
		"session_learned_edges": learnedEdges, "session_event_rate": eventsPerSecond, "streams_per_peer": streamsPerPeer,
		"session_rejected_events": rejectedPerSecond,
		"request_body_bytes":      maxRequestBodyBytes, "peer_sessions": sessionsPerPeer, "sessions": maxSessions,
	}
	var names []string
	for q := range limits {
		names = append(names, q)
	}
	slices.Sort(names)
	if h.flood != nil {
		h.flood.report()
	}
	var total int64
	for _, q := range names {
		var pushed int64
		if v, ok := h.pushed.Load(q); ok {
			pushed = v.(*atomic.Int64).Load()
		}
		fmt.Printf("quota=%s limit=%d pushed=%d refused=%.0f\n", q, limits[q], pushed, refusals[q])
		total += int64(refusals[q])
	}
	return total
}

func pace(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// coordinatorProc is the coordinator's process and its addresses.
type coordinatorProc struct {
	*benchproc.Proc
	grpc, http string
	pprof      string // its /debug/pprof listener, with -profile
}

// startCoordinator runs the coordinator in a child process on dir, with
// the soak's quotas, and returns once it leads.
func startCoordinator(dir string, withPprof bool) *coordinatorProc {
	args := []string{"-serve", dir}
	if withPprof {
		args = append(args, "-serve-pprof")
	}
	p, err := benchproc.Start(args...)
	check(err)
	f := strings.Fields(p.Line)
	co := &coordinatorProc{Proc: p, grpc: f[0], http: f[1]}
	if len(f) > 2 {
		co.pprof = f[2]
	}
	return co
}

// phaseCPU is the CPU the coordinator's process and this one used in a
// phase: unlike the machine's busy time, it hardly depends on what other
// processes run.
type phaseCPU struct {
	co           *coordinatorProc
	start        time.Time
	coord0, own0 float64
}

func (c *coordinatorProc) startCPU() *phaseCPU {
	return &phaseCPU{co: c, start: time.Now(), coord0: c.CPUSeconds(), own0: benchCPUSeconds()}
}

func (p *phaseCPU) String() string {
	wall := time.Since(p.start).Seconds()
	return fmt.Sprintf("coordinator cpu %.2f cores, bench %.2f", (p.co.CPUSeconds()-p.coord0)/wall, (benchCPUSeconds()-p.own0)/wall)
}

// benchCPUSeconds is the CPU this process used so far.
func benchCPUSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// profiler saves the coordinator's profiles with -profile.
type profiler struct {
	co  *coordinatorProc
	dir string
}

// heap saves an in-use heap profile (after a GC) as name.heap.pb.gz.
func (p *profiler) heap(name string) {
	if p.dir == "" {
		return
	}
	p.save(name+".heap.pb.gz", "/debug/pprof/heap?gc=1")
	p.save(name+".metrics.txt", "/metrics") // etcd's own metrics too
	p.saveURL(name+".coordinator-metrics.txt", "http://"+p.co.http+"/metrics")
	p.save(name+".mutex.pb.gz", "/debug/pprof/mutex")
}

// cpu saves a CPU profile of 15 s, from after into the phase.
func (p *profiler) cpu(ctx context.Context, name string, after time.Duration) {
	if p.dir == "" {
		return
	}
	pace(ctx, after)
	if ctx.Err() != nil {
		return
	}
	// This process too: the simulated sidecars' latency is measured here.
	f, err := os.Create(filepath.Join(p.dir, name+".bench-cpu.pb.gz"))
	check(err)
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Printf("bench CPU profile: %v", err)
	} else {
		defer pprof.StopCPUProfile()
	}
	p.save(name+".cpu.pb.gz", "/debug/pprof/profile?seconds=15")
}

func (p *profiler) save(file, path string) { p.saveURL(file, "http://"+p.co.pprof+path) }

// saveURL saves what url answers as file.
func (p *profiler) saveURL(file, url string) {
	resp, err := http.Get(url)
	if err != nil {
		log.Printf("profile %s: %v", file, err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(filepath.Join(p.dir, file), b, 0o644)
	}
	if err != nil {
		log.Printf("profile %s: %v", file, err)
	}
}

// metric reads an unlabelled metric from /metrics.
func (c *coordinatorProc) metric(name string) float64 {
	resp, err := http.Get("http://" + c.http + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// metricByLabel reads a counter from /metrics, by the value of label.
func (c *coordinatorProc) metricByLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + c.http + "/metrics")
	if err != nil {
		log.Printf("/metrics: %v", err)
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name+"{") {
			continue
		}
		_, rest, _ := strings.Cut(l, label+`="`)
		val, _, _ := strings.Cut(rest, `"`)
		_, num, _ := strings.Cut(l, "} ")
		v, _ := strconv.ParseFloat(num, 64)
		out[val] += v
	}
	return out
}

// runCoordinator is the child: a coordinator as coordinatord runs one,
// with the soak's quotas, until SIGTERM; it prints its gRPC and HTTP
// addresses.
func runCoordinator(dir string, withPprof bool) {
	debug.SetGCPercent(server.GCPercent())
	defer server.StartGCHeadroom(server.DefaultGCHeadroom)()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := server.Start(ctx, server.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: dir,
		MaxStreamsPerPeer: streamsPerPeer,
		Coordinator: coordinator.Config{
			MaxLiveTxnsPerSession:     liveTxnsPerSession,
			MaxNewServicesPerSession:  newServices,
			MaxNewVersionsPerSession:  newVersions,
			MaxLearnedEdgesPerSession: learnedEdges,
			MaxEventsPerSecond:        eventsPerSecond,
			EventBurst:                eventBurst,
			MaxRejectedPerSecond:      rejectedPerSecond,
			RejectedBurst:             rejectedBurst,
			MaxSessions:               maxSessions,
			MaxSessionsPerPeer:        sessionsPerPeer,
		}})
	check(err)
	_, err = srv.WaitLeading(ctx)
	check(err)
	addrs := []string{srv.GRPCAddr(), srv.HTTPAddr()}
	if withPprof {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		check(err)
		runtime.SetMutexProfileFraction(10) // who waits for the event lock
		go countWrites(ctx, srv.Client())
		http.Handle("/metrics", promhttp.Handler()) // etcd's metrics are on the default registry
		go func() { _ = http.Serve(l, nil) }()      // and net/http/pprof's handlers
		addrs = append(addrs, l.Addr().String())
	}
	fmt.Println(strings.Join(addrs, " "))
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Close(cctx); err != nil {
		log.Printf("coordinator close: %v", err)
	}
}

// countWrites logs, every 10 s, the etcd writes of the last 10 s by kind
// of key (with -profile: what the coordinator writes, and for whom).
func countWrites(ctx context.Context, cli *clientv3.Client) {
	counts := map[string]int{}
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	wch := cli.Watch(ctx, "/", clientv3.WithPrefix())
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			log.Printf("etcd writes in 10 s: %v", counts)
			clear(counts)
		case resp, ok := <-wch:
			if !ok {
				return
			}
			for _, ev := range resp.Events {
				f := strings.SplitN(string(ev.Kv.Key), "/", 6) // "", coordinator, v1, kind, name...
				k := strings.Join(f[:min(4, len(f))], "/")
				if len(f) > 4 && strings.HasPrefix(f[4], "hostile") {
					k += "/hostile*"
				}
				counts[ev.Type.String()+" "+k]++
			}
		}
	}
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
