// Command ingest measures the coordinator's event path: simulated sidecars
// stream batched events over loopback gRPC into an in-process coordinator
// backed by etcd, and in the same run it measures raw etcd puts/s with 256
// concurrent clients, FREENESS latency with 100000 live transactions, heap
// bytes per live 5-service transaction, and etcd writes per short
// transaction. etcd runs embedded in a child process so that the heap figure
// is the coordinator's (plus the simulated sidecars', which keep no
// per-transaction state).
//
// The last line is exactly:
//
//	events/s=N etcd_puts/s=M ratio=R free_p99_us=F bytes_per_txn=B etcd_writes_per_txn=W
//
// With -tls-compare N it measures instead the ingest throughput of N
// rounds with the coordinator's listeners in plaintext and with TLS and
// client certificates everywhere, and ends with
//
//	tls_off_events_per_s=A tls_on_events_per_s=B tls_cost_pct=C
//
// With -update-cycle it measures instead how updates affect the event path,
// with the coordinator as it is deployed: in a child process of its own
// (internal/benchproc; embedded etcd, coordinatord's GC target and quotas),
// the simulated sidecars in this one, each on its own gRPC connection
// (-one-conn: one shared). While CV updates of svc-e (to v2, back to v1,
// ...) follow one another without pause, it measures ingest for -duration
// in each of two modes: with every etcd write of an update record delayed
// by -update-delay (an internal/etcdgate in the child, set over its
// loopback debug listener), and without delay. Each mode runs in
// -cycle-slices slices (default 8) alternated ABBA with the other's
// (delayed, undelayed, undelayed, delayed, ...), so that the machine's
// drift falls on both alike: run one after the other, two phases with no
// delay at all differed by up to 23 % here (docs/BENCHMARKS.md;
// -cycle-slices 1 measures so, -update-delay 0 is that control). The last
// line is then
//
//	delayed_events_per_s=A undelayed_events_per_s=B max_ack_gap_ms=G
//
// where G is the longest any stream waited for an Ack during the delayed
// slices: the longest time a stream with batches unacknowledged went without
// receiving an Ack (simsidecar.MaxAckGap). Under this saturating load every
// batch also queues behind the stream's window, so the time from sending a
// batch to its Ack is logged too, as the longest a producer blocked on a
// full window. Each slice also logs the CPU each process used, the
// machine's, the time their threads waited in the kernel's run queues and
// the coordinator's event lock histograms (batch_lock_wait_seconds,
// batch_lock_held_seconds); -trace and -mutexprofile save profiles of the
// first delayed slice, -nice lowers this process's priority, and
// -cycle-in-process runs the coordinator in this process on one connection,
// as this mode first did (docs/BENCHMARKS.md explains the difference).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/internal/etcdgate"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
	"github.com/coordinator/coordinator/storage/embedetcd"
)

var services = []string{"svc-a", "svc-b", "svc-c", "svc-d", "svc-e"}

func main() {
	var (
		etcdChild = flag.String("etcd-child", "", "internal: run an embedded etcd in this data dir and print its endpoint")
		groups    = flag.Int("groups", 4, "sidecar groups; each has one stream per service of the 5-service chain")
		batch     = flag.Int("batch", 512, "events per stream message")
		window    = flag.Int("window", 4, "unacknowledged batches per stream")
		duration  = flag.Duration("duration", 5*time.Second, "measured ingest time")
		live      = flag.Int("live", 100000, "live transactions for the FREENESS and memory figures")
		queries   = flag.Int("queries", 5000, "FREENESS queries")
		flush     = flag.Duration("flush-interval", coordinator.DefaultFlushInterval, "write-behind period")
		putTime   = flag.Duration("put-duration", 3*time.Second, "raw etcd put measurement time")
		shortTime = flag.Duration("short-duration", 3*time.Second, "time of the short-transaction write measurement")
		cpuProf   = flag.String("cpuprofile", "", "write a CPU profile of the ingest phase to this file")
		cycle     = flag.Bool("update-cycle", false, "measure ingest while CV updates of svc-e cycle, with update records' writes delayed, then not")
		delay     = flag.Duration("update-delay", 200*time.Millisecond, "with -update-cycle: delay of each update record write in the delayed slices")
		traceOut  = flag.String("trace", "", "with -update-cycle: write runtime/traces of the first delayed slice to this file (this process) and to this file + \".coordinator\" (the coordinator's)")
		mutexOut  = flag.String("mutexprofile", "", "with -update-cycle: write the coordinator's mutex contention profile of the first delayed slice to this file")
		inProc    = flag.Bool("cycle-in-process", false, "with -update-cycle: run the coordinator in this process, beside the simulated sidecars, on one shared connection (the measurement before it moved to a child; for comparison)")
		oneConn   = flag.Bool("one-conn", false, "with -update-cycle: every stream on one shared gRPC connection instead of one connection per sidecar")
		cycleSl   = flag.Int("cycle-slices", 8, "with -update-cycle: each mode's -duration runs in this many slices, alternated ABBA with the other mode's (1: the delayed phase, then the undelayed)")
		nice      = flag.Int("nice", 0, "with -update-cycle: nice value of this process's threads (the simulated sidecars) once the coordinator's child started; 0 leaves it")
		serve     = flag.String("serve", "", "internal: run the coordinator on this data directory and print its addresses")
		tlsCmp    = flag.Int("tls-compare", 0, "instead: measure ingest this many rounds with the coordinator in plaintext, then with TLS and client certificates everywhere, and print the best of each")
	)
	flag.Parse()
	if *etcdChild != "" {
		runEtcdChild(*etcdChild)
		return
	}
	if *serve != "" {
		runCoordinator(*serve, *flush, *mutexOut != "")
		return
	}
	log.SetFlags(0)
	ctx := context.Background()
	if *tlsCmp > 0 {
		tlsCompare(ctx, *tlsCmp, *groups, *batch, *window, *duration, *flush)
		return
	}
	if *cycle && !*inProc {
		cycleOpts{
			groups: *groups, batch: *batch, window: *window, delay: *delay, d: *duration, flush: *flush,
			trace: *traceOut, mutex: *mutexOut, oneConn: *oneConn, nice: *nice, slices: *cycleSl,
		}.run(ctx)
		return
	}
	dir, err := os.MkdirTemp("", "ingest-bench-")
	check(err)
	defer os.RemoveAll(dir)

	endpoint, stopEtcd := startEtcdChild(dir)
	defer stopEtcd()

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second})
	check(err)
	puts, err := storage.MeasurePuts(ctx, cli, "/bench/puts/", 256, *putTime)
	check(err)
	cli.Close()
	log.Printf("raw etcd: %.0f puts/s with 256 concurrent clients", puts)

	var gate *etcdgate.KV
	srv, err := server.Start(ctx, server.Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", EtcdEndpoints: []string{endpoint},
		Coordinator: coordinator.Config{FlushInterval: *flush, MaxEventsPerSecond: benchEventRate},
		WrapKV: func(kv clientv3.KV) clientv3.KV {
			gate = etcdgate.New(kv, storage.Keys{Prefix: storage.DefaultPrefix}.Updates())
			return gate
		},
	})
	check(err)
	defer srv.Close(context.Background())
	_, err = srv.WaitLeading(ctx)
	check(err)
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	check(err)
	defer conn.Close()

	gs := make([]*group, *groups)
	for g := range gs {
		gs[g] = newGroup(ctx, func() *grpc.ClientConn { return conn }, g, *batch, *window)
	}

	// 1. Throughput of short transactions (Begin, 4 Calls, 4 Returns, End).
	runPhase(gs, time.Second) // warm-up
	if *cycle {
		inProcessCycle(ctx, conn, gs, gate, srv.HTTPAddr(), *delay, *duration, *cycleSl, *traceOut, *mutexOut)
		return
	}
	before := srv.Leader().WriteBehindStats()
	applied0, late0 := scrape(srv.HTTPAddr())
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		check(err)
		check(pprof.StartCPUProfile(f))
	}
	evs, txns, elapsed := runPhase(gs, *duration)
	if *cpuProf != "" {
		pprof.StopCPUProfile()
	}
	check(srv.Leader().Flush(ctx))
	after := srv.Leader().WriteBehindStats()
	applied1, late1 := scrape(srv.HTTPAddr())
	applied, late := applied1-applied0, late1-late0
	if applied+late != float64(evs) {
		log.Fatalf("ingest: %d events acknowledged but the coordinator counted %.0f applied and %.0f late", evs, applied, late)
	}
	rate := applied / elapsed.Seconds()
	log.Printf("ingest: %d events (%d transactions) in %v on %d streams: %.0f applied (%.0f late, ignored): %.0f events/s; %d etcd writes: %.4f per transaction (these live up to tens of ms under this load)",
		evs, txns, elapsed.Round(time.Millisecond), 4*len(gs), applied, late, rate, after.Ops-before.Ops,
		float64(after.Ops-before.Ops)/float64(txns))
	waitLive(srv, 0)

	// 1b. etcd writes per transaction shorter than the flush interval: one
	// group sending each stream's batch only after the previous one was
	// acknowledged, so a transaction lives a few loopback round trips.
	short := newGroup(ctx, func() *grpc.ClientConn { return conn }, len(gs), 32, 1)
	short.sync = true
	before = srv.Leader().WriteBehindStats()
	_, stxns, selapsed := runPhase([]*group{short}, *shortTime)
	check(srv.Leader().Flush(ctx))
	after = srv.Leader().WriteBehindStats()
	writes := float64(after.Ops-before.Ops) / float64(stxns)
	log.Printf("short transactions: %d in %v (%.0f µs per chunk of %d, Begin to End), %d etcd writes: %.4f per transaction",
		stxns, selapsed.Round(time.Millisecond), float64(selapsed.Microseconds())/float64(stxns/int64(short.k)), short.k,
		after.Ops-before.Ops, writes)
	short.close()
	var errs int64
	for _, g := range gs {
		errs += g.errors.Load()
	}
	if errs > 0 {
		log.Fatalf("ingest: %d events were rejected", errs)
	}
	waitLive(srv, 0)

	// 2. Heap per live 5-service transaction and FREENESS latency at 100000 live.
	heap0 := heapAlloc()
	perGroup := *live / len(gs)
	var wg sync.WaitGroup
	for _, g := range gs {
		wg.Add(1)
		go func() { defer wg.Done(); g.openLive(perGroup) }()
	}
	wg.Wait()
	n := perGroup * len(gs)
	waitLive(srv, n)
	check(srv.Leader().Flush(ctx))
	bytesPerTxn := float64(heapAlloc()-heap0) / float64(n)
	log.Printf("memory: %d live transactions, %.0f heap bytes each", n, bytesPerTxn)

	admin := pb.NewAdminServiceClient(conn)
	lat := make([]time.Duration, 0, *queries)
	for i := range *queries {
		start := time.Now()
		f, err := admin.GetFreeness(ctx, &pb.GetFreenessRequest{Service: services[i%len(services)]})
		check(err)
		lat = append(lat, time.Since(start))
		if f.Free || int(f.Blocking) != n {
			log.Fatalf("freeness of %s: free=%v blocking=%d, want blocked by %d", f.Service, f.Free, f.Blocking, n)
		}
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	log.Printf("freeness over gRPC with %d live: p50 %v p99 %v (%d queries, 20 blockers each)", n, p50, p99, len(lat))
	for _, g := range gs {
		g.close()
	}
	fmt.Printf("events/s=%.0f etcd_puts/s=%.0f ratio=%.1f free_p99_us=%d bytes_per_txn=%.0f etcd_writes_per_txn=%.4f\n",
		rate, puts, rate/puts, p99.Microseconds(), bytesPerTxn, writes)
}

// ackWait is the longest any stream waited for an Ack (ns) since it was
// last reset.
var ackWait atomic.Int64

// group is one simulated deployment of the chain: a stream per service.
type group struct {
	id      int
	sc      []*simsidecar.Sidecar
	out     []*outbox
	next    uint64
	k       int  // transactions per chunk
	sync    bool // wait for each batch's ack before the next send
	ids     []string
	errors  atomic.Int64
	stopped atomic.Bool
}

// outbox batches one stream's events and keeps a window of unacked batches.
type outbox struct {
	g       *group
	sc      *simsidecar.Sidecar
	buf     []*pb.Event
	pool    []*pb.Event
	pending []<-chan *pb.Ack
	sizes   []int
	window  int
	acked   int64
	sub     uint64 // the sub-transaction this service's returns are about
}

// newGroup connects the group's sidecars, each on the connection dial
// returns.
// benchEventRate is the coordinator's per-session event quota here
// (--max-events-per-second). A simulated sidecar of the chain's first
// service sends 4 of a transaction's 10 events for a quarter of the
// traffic: at 2 million events/s, 200,000/s, the default quota, which
// bench/abuse measures as a bound on hostile sessions. Here it would
// measure the quota, not the coordinator: no real sidecar sends that many.
const benchEventRate = 10_000_000

func newGroup(ctx context.Context, dial func() *grpc.ClientConn, id, batch, window int) *group {
	g := &group{id: id, k: batch / 2}
	for i, s := range services {
		var deps []string
		if i+1 < len(services) {
			deps = []string{services[i+1]}
		}
		sc, _, err := simsidecar.Connect(ctx, dial(), &pb.Register{
			InstanceId: fmt.Sprintf("%s-%d", s, id), Service: s, Version: "v1", Dependencies: deps,
		})
		check(err)
		g.sc = append(g.sc, sc)
		ob := &outbox{g: g, sc: sc, window: window, pool: make([]*pb.Event, batch), sub: uint64(i + 2)}
		for j := range ob.pool {
			ob.pool[j] = &pb.Event{}
		}
		g.out = append(g.out, ob)
	}
	return g
}

func (o *outbox) add(typ pb.EventType, txn, to string, sub, caller uint64) {
	e := o.pool[len(o.buf)]
	e.Type, e.TxnId, e.Service, e.SubId, e.CallerSubId = typ, txn, to, sub, caller
	o.buf = append(o.buf, e)
	if len(o.buf) == cap(o.pool) {
		o.flush()
	}
}

// flush sends the buffered events; the event structs are reused at once
// since Send has marshalled them.
func (o *outbox) flush() {
	if len(o.buf) == 0 {
		return
	}
	for len(o.pending) >= o.window {
		o.waitOne()
	}
	ch, err := o.sc.SendAsync(o.buf...)
	check(err)
	o.pending = append(o.pending, ch)
	o.sizes = append(o.sizes, len(o.buf))
	o.buf = o.buf[:0]
	if o.g.sync {
		o.waitOne()
	}
}

func (o *outbox) waitOne() {
	start := time.Now()
	ack, ok := <-o.pending[0]
	if w := int64(time.Since(start)); w > ackWait.Load() {
		for old := ackWait.Load(); w > old && !ackWait.CompareAndSwap(old, w); old = ackWait.Load() {
		}
	}
	if !ok {
		log.Fatalf("stream ended: %v", o.sc.Err())
	}
	o.g.errors.Add(int64(len(ack.Errors)))
	for i, e := range ack.Errors {
		if i < 3 {
			log.Printf("event rejected: %s", e.Message)
		}
	}
	o.acked += int64(o.sizes[0])
	o.pending, o.sizes = o.pending[1:], o.sizes[1:]
}

func (o *outbox) drain() {
	o.flush()
	for len(o.pending) > 0 {
		o.waitOne()
	}
}

// chunk emits k 5-service transactions (svc-a calls b calls c calls d calls
// e). Each event goes on the stream of the service that emits it (the
// calling side), and the streams are flushed in causal order: a's Begin and
// Call, then b's, c's and d's Calls, then the Returns back up, then a's End.
// Streams are not synchronized with each other (no waiting for acks), as
// with real sidecars, so a few events may still arrive out of order; the
// coordinator counts those that arrive after their transaction's End as late.
// With end false the transactions stay live, running on all five services.
func (g *group) chunk(k int, end bool) {
	a, b, c, d := g.out[0], g.out[1], g.out[2], g.out[3]
	first := g.next + 1
	g.next += uint64(k)
	ids := g.ids[:0]
	for i := range uint64(k) {
		ids = append(ids, "g"+strconv.Itoa(g.id)+"-"+strconv.FormatUint(first+i, 16))
	}
	g.ids = ids
	for _, id := range ids {
		a.add(pb.EventType_EVENT_TYPE_BEGIN, id, "", 1, 0)
		a.add(pb.EventType_EVENT_TYPE_CALL, id, services[1], 2, 1)
	}
	a.flush()
	for _, id := range ids {
		b.add(pb.EventType_EVENT_TYPE_CALL, id, services[2], 3, 2)
	}
	b.flush()
	for _, id := range ids {
		c.add(pb.EventType_EVENT_TYPE_CALL, id, services[3], 4, 3)
	}
	c.flush()
	for _, id := range ids {
		d.add(pb.EventType_EVENT_TYPE_CALL, id, services[4], 5, 4)
		if end {
			d.add(pb.EventType_EVENT_TYPE_RETURN, id, "", 5, 0)
		}
	}
	d.flush()
	if !end {
		return
	}
	for _, o := range []*outbox{c, b} {
		for _, id := range ids {
			o.add(pb.EventType_EVENT_TYPE_RETURN, id, "", o.sub, 0)
		}
		o.flush()
	}
	for _, id := range ids {
		a.add(pb.EventType_EVENT_TYPE_RETURN, id, "", 2, 0)
		a.add(pb.EventType_EVENT_TYPE_END, id, "", 0, 0)
	}
	a.flush()
}

// openLive leaves n transactions running on all five services.
func (g *group) openLive(n int) {
	for n > 0 {
		k := min(n, g.k)
		g.chunk(k, false)
		n -= k
	}
	for _, o := range g.out {
		o.drain()
	}
}

func (g *group) acked() (n int64) {
	for _, o := range g.out {
		n += o.acked
	}
	return n
}

func (g *group) close() {
	for _, sc := range g.sc {
		sc.Close()
	}
}

// runPhase runs every group for d and returns acked events, transactions
// and the time it took until all were acknowledged.
func runPhase(gs []*group, d time.Duration) (events, txns int64, elapsed time.Duration) {
	var before int64
	for _, g := range gs {
		before += g.acked()
	}
	var total atomic.Int64
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for _, g := range gs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var n int64
			for time.Now().Before(deadline) {
				g.chunk(g.k, true)
				n += int64(g.k)
			}
			for _, o := range g.out {
				o.drain()
			}
			total.Add(n)
		}()
	}
	wg.Wait()
	elapsed = time.Since(start)
	var after int64
	for _, g := range gs {
		after += g.acked()
	}
	return after - before, total.Load(), elapsed
}

// scrape reads the coordinator's applied and late event counters from /metrics.
func scrape(addr string) (applied, late float64) {
	resp, err := http.Get("http://" + addr + "/metrics")
	check(err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		check(err)
		switch {
		case strings.HasPrefix(name, "coordinator_events_total{"):
			applied += v
		case strings.HasPrefix(name, "coordinator_late_events_total{"): // by reason
			late += v
		}
	}
	check(sc.Err())
	return applied, late
}

func waitLive(srv *server.Server, n int) {
	deadline := time.Now().Add(time.Minute)
	for srv.Leader().Live() != n {
		if time.Now().After(deadline) {
			log.Fatalf("live transactions = %d, want %d", srv.Leader().Live(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func heapAlloc() uint64 {
	var m runtime.MemStats
	for range 3 {
		runtime.GC()
	}
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// startEtcdChild re-executes this program as an embedded etcd server.
func startEtcdChild(dir string) (string, func()) {
	self, err := os.Executable()
	check(err)
	cmd := exec.Command(self, "-etcd-child", filepath.Join(dir, "etcd"))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	check(err)
	stdout, err := cmd.StdoutPipe()
	check(err)
	check(cmd.Start())
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		log.Fatalf("etcd child: %v", err)
	}
	return line[:len(line)-1], func() {
		stdin.Close()
		_ = cmd.Wait()
	}
}

// runEtcdChild serves an embedded etcd until stdin closes.
func runEtcdChild(dir string) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	e, err := embedetcd.Start(ctx, embedetcd.Config{DataDir: dir, ClientAddr: "127.0.0.1:0"})
	check(err)
	defer e.Close()
	fmt.Println(e.Endpoints()[0])
	go func() {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
		stop()
	}()
	<-ctx.Done()
}
