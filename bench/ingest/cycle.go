package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	_ "net/http/pprof" // the coordinator child's profiles (-trace, -mutexprofile)
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
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
	"github.com/coordinator/coordinator/internal/benchproc"
	"github.com/coordinator/coordinator/internal/etcdgate"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// cycleOpts configure -update-cycle with the coordinator in a child
// process, as it is deployed, and the simulated sidecars in this one.
type cycleOpts struct {
	groups, batch, window int
	delay, d, flush       time.Duration
	trace, mutex          string
	oneConn               bool
	nice                  int
	slices                int
}

// run starts the coordinator's child (coordinatord's settings: embedded
// etcd, GC target server.GCPercent, default quotas but the per-session
// event rate, benchEventRate; its update record writes go through an
// etcdgate whose delay this process sets over the child's loopback debug
// listener), connects the sidecars, each on its own gRPC connection
// unless oneConn (a sidecar is a process of its own: one connection
// each), warms up and measures.
func (o cycleOpts) run(ctx context.Context) {
	dir, err := os.MkdirTemp("", "ingest-cycle-")
	check(err)
	defer os.RemoveAll(dir)
	args := []string{"-serve", dir, "-flush-interval", o.flush.String()}
	if o.mutex != "" {
		args = append(args, "-mutexprofile", "on")
	}
	p, err := benchproc.Start(args...)
	check(err)
	defer p.StopWithin(30 * time.Second)
	// Interrupted, remove the child's data while it still runs (its open
	// files stay valid), then kill it and remove what it wrote meanwhile:
	// once it is gone, the streams' end makes a producer exit at once. A
	// log.Fatal leaves the data (the kernel kills the child, see
	// benchproc.Start).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		sig, ok := <-sigs
		if !ok {
			return
		}
		os.RemoveAll(dir)
		p.StopWithin(0)
		os.RemoveAll(dir)
		log.Printf("%v: coordinator killed, its data removed", sig)
		os.Exit(1)
	}()
	f := strings.Fields(p.Line)
	if len(f) != 3 {
		log.Fatalf("coordinator printed %q: want its gRPC, HTTP and debug addresses", p.Line)
	}
	grpcAddr, httpAddr, debugAddr := f[0], f[1], f[2]
	if o.nice != 0 {
		// After the child started: it keeps its own priority.
		if err := renice(o.nice); err != nil {
			log.Printf("renice: %v", err)
		}
	}
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	dial := func() *grpc.ClientConn {
		if o.oneConn && len(conns) > 0 {
			return conns[0]
		}
		c, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		check(err)
		conns = append(conns, c)
		return c
	}
	gs := make([]*group, o.groups)
	for g := range gs {
		gs[g] = newGroup(ctx, dial, g, o.batch, o.window)
	}
	admin := dial()
	log.Printf("update cycle: coordinator in child process %d (GOGC %d), %d simulated sidecars in this process (nice %d) on %d gRPC connections, GOMAXPROCS %d",
		p.Pid(), server.GCPercent(), 5*len(gs)+1, o.nice, len(conns), runtime.GOMAXPROCS(0))
	runPhase(gs, time.Second) // warm-up
	hc := &http.Client{Timeout: time.Minute}
	get := func(path string, w io.Writer) {
		resp, err := hc.Get("http://" + debugAddr + path)
		check(err)
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			log.Fatalf("%s: %s", path, resp.Status)
		}
		_, err = io.Copy(w, resp.Body)
		check(err)
	}
	t := target{
		http: httpAddr,
		setDelay: func(d time.Duration) int {
			var b strings.Builder
			get("/bench/update-delay?d="+d.String(), &b)
			n, err := strconv.Atoi(strings.TrimSpace(b.String()))
			check(err)
			return n
		},
		cpu: func() time.Duration {
			d, _ := p.CPU()
			return d
		},
		pid: p.Pid(),
		profile: func(d time.Duration) func() {
			secs := strconv.Itoa(int(math.Ceil(d.Seconds())))
			var wg sync.WaitGroup
			save := func(path, file string) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out, err := os.Create(file)
					check(err)
					get(path, out)
					check(out.Close())
					log.Printf("saved %s", file)
				}()
			}
			var self *os.File
			if o.trace != "" {
				save("/debug/pprof/trace?seconds="+secs, o.trace+".coordinator")
				self, err = os.Create(o.trace)
				check(err)
				check(trace.Start(self))
			}
			if o.mutex != "" {
				save("/debug/pprof/mutex?seconds="+secs, o.mutex)
			}
			return func() {
				if self != nil {
					trace.Stop()
					check(self.Close())
					log.Printf("saved %s", o.trace)
				}
				wg.Wait()
			}
		},
	}
	updateCycle(ctx, admin, gs, t, o.delay, o.d, o.slices)
}

// inProcessCycle is the measurement as it was first taken: the
// coordinator in this process, beside the simulated sidecars, every
// stream on one connection.
func inProcessCycle(ctx context.Context, conn *grpc.ClientConn, gs []*group, gate *etcdgate.KV, httpAddr string, delay, d time.Duration, nSlices int, traceOut, mutexOut string) {
	log.Printf("update cycle: coordinator in this process, beside %d simulated sidecars on one gRPC connection, GOMAXPROCS %d",
		5*len(gs)+1, runtime.GOMAXPROCS(0))
	t := target{
		http: httpAddr,
		setDelay: func(d time.Duration) int {
			gate.SetDelay(d)
			return gate.Matched()
		},
		profile: func(time.Duration) func() {
			var f *os.File
			if traceOut != "" {
				var err error
				f, err = os.Create(traceOut)
				check(err)
				check(trace.Start(f))
			}
			if mutexOut != "" {
				runtime.SetMutexProfileFraction(1)
			}
			return func() {
				if f != nil {
					trace.Stop()
					check(f.Close())
				}
				if mutexOut != "" {
					f, err := os.Create(mutexOut)
					check(err)
					check(pprof.Lookup("mutex").WriteTo(f, 0))
					check(f.Close())
					runtime.SetMutexProfileFraction(0)
				}
			}
		},
	}
	updateCycle(ctx, conn, gs, t, delay, d, nSlices)
}

// sliceOrder is the order of updateCycle's slices, n of each mode, true
// for a delayed one: ABBA (delayed, undelayed, undelayed, delayed, ...),
// so that a linear drift of the machine's speed adds as much to each mode.
func sliceOrder(n int) []bool {
	order := make([]bool, 0, 2*n)
	for i := range n {
		order = append(order, i%2 == 0, i%2 == 1)
	}
	return order
}

// target is the coordinator measured by updateCycle.
type target struct {
	http string // its HTTP address (/metrics)
	// setDelay delays every later write of an update record by d and
	// returns the number of such writes so far.
	setDelay func(d time.Duration) int
	// profile starts the profiles of the first delayed slice, of d; the
	// func it returns ends them once the slice is over.
	profile func(d time.Duration) func()
	// cpu is the CPU time the coordinator's process used so far; nil if
	// it shares this process.
	cpu func() time.Duration
	pid int // the coordinator's process (0: this one)
}

// runDelay is the time the threads of process pid (0: this one) have
// spent runnable but waiting for a CPU in the kernel's run queues, from
// /proc/PID/task/*/schedstat (second field, ns); threads that ended are
// not counted. 0 where /proc cannot tell.
func runDelay(pid int) time.Duration {
	dir := "/proc/self/task"
	if pid != 0 {
		dir = fmt.Sprintf("/proc/%d/task", pid)
	}
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			ns, _ := strconv.ParseInt(f[1], 10, 64)
			sum += time.Duration(ns)
		}
	}
	return sum
}

// machineCPU is the machine's busy and total CPU time (all cores) from
// /proc/stat, in clock ticks.
func machineCPU() (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:9] {
		n, _ := strconv.ParseUint(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// heartbeatEvery is the simulated sidecars' heartbeat interval in the
// update cycle: the Go SDK's default.
const heartbeatEvery = time.Second

// heartbeats sends a heartbeat on each sidecar every period, as a real
// sidecar does, until the func it returns is called; the first failures
// are logged.
func heartbeats(ctx context.Context, scs []*simsidecar.Sidecar, period time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for _, sc := range scs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(period)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				a, err := sc.Heartbeat(ctx)
				if ctx.Err() != nil {
					return
				}
				if err == nil && a.Error != "" {
					err = errors.New(a.Error)
				}
				if err != nil && failed.Add(1) <= 3 {
					log.Printf("heartbeat of a simulated sidecar: %v", err)
				}
			}
		}()
	}
	return func() {
		cancel()
		wg.Wait()
	}
}

// selfCPU is the CPU time this process used so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// updateCycle measures ingest while CV updates of the chain's last service
// follow one another without pause, in two modes: with every write of an
// update record delayed by delay (a slow etcd), and without. Each mode
// runs for d in all, in slices of d/nSlices alternated ABBA (delayed,
// undelayed, undelayed, delayed, ...; with nSlices 1: delayed, then
// undelayed), so that a drift of the machine's speed during the run falls
// on both modes alike. It prints the events/s of each mode and the
// longest a stream waited for an Ack while delayed: a coordinator that
// waited for etcd on the event path would stall every stream for each
// delayed write.
func updateCycle(ctx context.Context, conn *grpc.ClientConn, gs []*group, t target, delay, d time.Duration, nSlices int) {
	svc := services[len(services)-1]
	// The other version's instance: an update switches only to a
	// connected version.
	v2, _, err := simsidecar.Connect(ctx, conn, &pb.Register{InstanceId: svc + "-v2", Service: svc, Version: "v2"})
	check(err)
	defer v2.Close()
	// Sidecars heartbeat; without it their leases (3 × the default 5 s
	// interval) expire during a slow run, self-preservation queues the
	// expiries and the update under way holds its switch until they end.
	all := []*simsidecar.Sidecar{v2}
	for _, g := range gs {
		all = append(all, g.sc...)
	}
	defer heartbeats(ctx, all, heartbeatEvery)()
	admin := pb.NewAdminServiceClient(conn)
	versions := [2]string{"v2", "v1"}
	var next int // versions[next] is the next update's target
	// mode is what the slices of one mode add up to.
	type mode struct {
		events          int64
		elapsed         time.Duration
		updates, writes int
		maxGap, blocked time.Duration
		inPhase         map[pb.Phase]time.Duration // time the updates spent in each phase
	}
	// slice measures ingest for d with update record writes delayed by
	// delay, and adds what it saw to m.
	slice := func(delay, d time.Duration, m *mode) {
		matched := t.setDelay(delay)
		defer func() { m.writes += t.setDelay(0) - matched }()
		stop := make(chan struct{})
		done := make(chan int)
		go func() {
			n := 0
			for {
				select {
				case <-stop:
					done <- n
					return
				default:
				}
				u, err := admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: svc, ToVersion: versions[next], Strategy: pb.Strategy_STRATEGY_CV})
				check(err)
				slow := time.Now().Add(10 * time.Second) // then say where it waits, once
				for u.Phase != pb.Phase_PHASE_DONE {
					if u.FinishedAt != nil {
						log.Fatalf("update %s ended %s: %s", u.Id, u.Phase, u.Reason)
					}
					if !slow.IsZero() && time.Now().After(slow) {
						slow = time.Time{}
						log.Printf("update %s still %s after 10s: %v", u.Id, u.Phase, u.GetProgress())
					}
					time.Sleep(2 * time.Millisecond)
					u, err = admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
					check(err)
				}
				for i := 1; i < len(u.History); i++ {
					m.inPhase[u.History[i-1].Phase] += u.History[i].At.AsTime().Sub(u.History[i-1].At.AsTime())
				}
				next = 1 - next
				n++
			}
		}()
		ackWait.Store(0)
		for _, g := range gs {
			for _, sc := range g.sc {
				sc.MaxAckGap(true)
			}
		}
		h0 := scrapeHists(t.http)
		var endProfiles func()
		if delay > 0 && m.elapsed == 0 { // the first delayed slice
			endProfiles = t.profile(d)
		}
		var cpu0 time.Duration
		if t.cpu != nil {
			cpu0 = t.cpu()
		}
		self0, rd0, srd0 := selfCPU(), runDelay(t.pid), runDelay(0)
		busy0, total0 := machineCPU()
		evs, _, elapsed := runPhase(gs, d)
		self1, rd1, srd1 := selfCPU(), runDelay(t.pid), runDelay(0)
		busy1, total1 := machineCPU()
		machine := fmt.Sprintf("machine (%d cores) busy %.0f%%", runtime.NumCPU(), 100*float64(busy1-busy0)/float64(max(total1-total0, 1)))
		if t.cpu != nil {
			log.Printf("update cycle, delay %v: %.0f events/s; CPU used: coordinator %.0f%% of a core, simulated sidecars %.0f%%; %s; threads waiting in the kernel's run queues, on average: coordinator's %.2f, sidecars' %.2f",
				delay, float64(evs)/elapsed.Seconds(), 100*(t.cpu()-cpu0).Seconds()/elapsed.Seconds(), 100*(self1-self0).Seconds()/elapsed.Seconds(), machine,
				(rd1-rd0).Seconds()/elapsed.Seconds(), (srd1-srd0).Seconds()/elapsed.Seconds())
		} else {
			log.Printf("update cycle, delay %v: %.0f events/s; CPU used by this process (coordinator and simulated sidecars): %.0f%% of a core; %s; its threads waiting in the kernel's run queues, on average: %.2f",
				delay, float64(evs)/elapsed.Seconds(), 100*(self1-self0).Seconds()/elapsed.Seconds(), machine, (srd1-srd0).Seconds()/elapsed.Seconds())
		}
		if endProfiles != nil {
			endProfiles()
		}
		h1 := scrapeHists(t.http)
		for _, name := range []string{"coordinator_batch_lock_wait_seconds", "coordinator_batch_lock_held_seconds"} {
			log.Printf("update cycle, delay %v: %s %s", delay, strings.TrimPrefix(name, "coordinator_"), h1[name].since(h0[name]))
		}
		m.blocked = max(m.blocked, time.Duration(ackWait.Load()))
		for _, g := range gs {
			for _, sc := range g.sc {
				m.maxGap = max(m.maxGap, sc.MaxAckGap(false))
			}
		}
		close(stop)
		m.updates += <-done // the update under way finishes, still delayed
		m.events += evs
		m.elapsed += elapsed
	}
	mean := func(m *mode) string {
		var out []string
		for _, p := range []pb.Phase{pb.Phase_PHASE_PREPARING, pb.Phase_PHASE_DRAINING, pb.Phase_PHASE_SWITCHED} {
			out = append(out, fmt.Sprintf("%s %v", strings.TrimPrefix(p.String(), "PHASE_"), (m.inPhase[p]/time.Duration(max(m.updates, 1))).Round(time.Microsecond)))
		}
		return strings.Join(out, ", ")
	}
	nSlices = max(nSlices, 1)
	each := d / time.Duration(nSlices)
	delayed := &mode{inPhase: map[pb.Phase]time.Duration{}}
	undelayed := &mode{inPhase: map[pb.Phase]time.Duration{}}
	for _, isDelayed := range sliceOrder(nSlices) {
		if isDelayed {
			slice(delay, each, delayed)
		} else {
			slice(0, each, undelayed)
		}
	}
	dRate := float64(delayed.events) / delayed.elapsed.Seconds()
	uRate := float64(undelayed.events) / undelayed.elapsed.Seconds()
	log.Printf("update cycle, delayed: mean time per update in %s", mean(delayed))
	log.Printf("update cycle, undelayed: mean time per update in %s", mean(undelayed))
	log.Printf("update cycle, update record writes delayed %v (%d slices of %v): %.0f events/s, %d CV updates of %s (%d delayed writes); longest a stream went without an Ack %v, longest a producer blocked on a full window %v",
		delay, nSlices, each, dRate, delayed.updates, svc, delayed.writes, delayed.maxGap.Round(time.Microsecond), delayed.blocked.Round(time.Microsecond))
	log.Printf("update cycle, undelayed (%d slices of %v): %.0f events/s, %d CV updates; longest a stream went without an Ack %v, longest a producer blocked on a full window %v",
		nSlices, each, uRate, undelayed.updates, undelayed.maxGap.Round(time.Microsecond), undelayed.blocked.Round(time.Microsecond))
	var errs int64
	for _, g := range gs {
		errs += g.errors.Load()
	}
	if errs > 0 {
		log.Fatalf("ingest: %d events were rejected", errs)
	}
	for _, g := range gs {
		g.close()
	}
	fmt.Printf("delayed_events_per_s=%.0f undelayed_events_per_s=%.0f max_ack_gap_ms=%.1f\n",
		dRate, uRate, float64(delayed.maxGap)/float64(time.Millisecond))
}

// runCoordinator is the child: a coordinator as coordinatord runs one, on
// loopback with its embedded etcd, until SIGTERM, its update record
// writes going through an etcdgate. It prints its gRPC, HTTP and debug
// addresses; the debug listener serves net/http/pprof and
// /bench/update-delay?d=DURATION, which sets the delay of every later
// update record write and answers the number of such writes so far.
func runCoordinator(dir string, flush time.Duration, mutexProfile bool) {
	debug.SetGCPercent(server.GCPercent())
	defer server.StartGCHeadroom(server.DefaultGCHeadroom)()
	if mutexProfile {
		runtime.SetMutexProfileFraction(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var gate atomic.Pointer[etcdgate.KV]
	http.HandleFunc("/bench/update-delay", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.FormValue("d"))
		g := gate.Load()
		if err != nil || g == nil {
			http.Error(w, fmt.Sprintf("d=%q: %v (gate %v)", r.FormValue("d"), err, g != nil), http.StatusBadRequest)
			return
		}
		g.SetDelay(d)
		fmt.Fprintln(w, g.Matched())
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	go func() { _ = http.Serve(lis, nil) }()
	srv, err := server.Start(ctx, server.Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: dir,
		Coordinator: coordinator.Config{FlushInterval: flush, MaxEventsPerSecond: benchEventRate},
		WrapKV: func(kv clientv3.KV) clientv3.KV {
			g := etcdgate.New(kv, storage.Keys{Prefix: storage.DefaultPrefix}.Updates())
			gate.Store(g)
			return g
		},
	})
	check(err)
	_, err = srv.WaitLeading(ctx)
	check(err)
	fmt.Println(srv.GRPCAddr(), srv.HTTPAddr(), lis.Addr())
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Close(cctx); err != nil {
		log.Printf("coordinator close: %v", err)
	}
}

// renice lowers the priority of every thread of this process (the
// simulated sidecars) to nice n; threads the runtime starts later inherit
// it.
func renice(n int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, n); err != nil {
			return fmt.Errorf("setpriority %d: %w", tid, err)
		}
	}
	return nil
}

// hist is a Prometheus histogram read from /metrics: cumulative counts by
// upper bound, in the order exposed (ascending), +Inf last.
type hist struct {
	le  []float64
	cum []float64
}

// scrapeHists reads every histogram's buckets from /metrics.
func scrapeHists(addr string) map[string]*hist {
	resp, err := http.Get("http://" + addr + "/metrics")
	check(err)
	defer resp.Body.Close()
	out := map[string]*hist{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, rest, ok := strings.Cut(line, "_bucket{")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.Index(rest, `le="`)
		if i < 0 {
			continue
		}
		leStr, val, _ := strings.Cut(rest[i+4:], `"} `)
		le, err := strconv.ParseFloat(leStr, 64) // "+Inf" parses as +Inf
		check(err)
		v, err := strconv.ParseFloat(val, 64)
		check(err)
		h := out[name]
		if h == nil {
			h = &hist{}
			out[name] = h
		}
		h.le = append(h.le, le)
		h.cum = append(h.cum, v)
	}
	check(sc.Err())
	return out
}

// since describes the observations made between h0 and h: their count,
// and the bucket bounds that hold the median, the 99th percentile and the
// largest.
func (h *hist) since(h0 *hist) string {
	if h == nil {
		return "(not exposed)"
	}
	cum := slices.Clone(h.cum)
	if h0 != nil && len(h0.cum) == len(cum) {
		for i := range cum {
			cum[i] -= h0.cum[i]
		}
	}
	n := cum[len(cum)-1]
	if n == 0 {
		return "n=0"
	}
	bound := func(q float64) string {
		for i, c := range cum {
			if c >= q*n {
				if i > 0 && math.IsInf(h.le[i], 1) {
					return fmt.Sprintf(">%v", time.Duration(h.le[i-1]*1e9))
				}
				return fmt.Sprintf("<=%v", time.Duration(h.le[i]*1e9))
			}
		}
		return "?"
	}
	maxB := "?"
	for i := len(cum) - 1; i >= 0; i-- {
		if i == 0 || cum[i] > cum[i-1] {
			if math.IsInf(h.le[i], 1) && i > 0 {
				maxB = fmt.Sprintf(">%v", time.Duration(h.le[i-1]*1e9))
			} else {
				maxB = fmt.Sprintf("<=%v", time.Duration(h.le[i]*1e9))
			}
			break
		}
	}
	return fmt.Sprintf("n=%.0f p50 %s p99 %s max %s", n, bound(0.5), bound(0.99), maxB)
}
