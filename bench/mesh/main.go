// Command mesh measures today's coordinator on a mesh of the size Istio
// publishes for its load tests (issue 11): by default 1,000 services and
// 2,000 sidecars. The coordinator runs in a process of its own (this
// program re-executed, as bench/update does); the sidecars are Go SDK
// clients in this process, each with a real gRPC stream, simulating the
// services with internal/loadsim and its version-consistency oracle.
//
// The mesh is a layered acyclic graph (-layers, default 5) where each
// service above the last layer calls 2 to 4 services of lower layers,
// drawn from -seed (printed). Every service has one instance at v1; the
// service the CV update moves and the one the NAIVE flips move have one at
// v2; the remaining sidecars are second (third, ...) v1 instances of the
// other services in turn. With -sidecars=2000 -services=1000 every service
// has two sidecars. -services defaults to half of -sidecars.
//
// Phases, each bounded by a timeout (a phase that does not complete prints
// "timeout" when its bound expired, "failed" when the coordinator refused
// or aborted it, "skipped" when an earlier phase failed; never an
// estimate):
//
//  1. register: every sidecar connects at once; register_s is the time
//     until all are registered and hold their first routing table (the
//     SDK's Start returned).
//  2. idle: once no routing table has reached any sidecar for 2 s, the
//     coordinator's CPU (utime+stime of /proc/<pid>/stat) over -idle
//     (10 s) with every session idle and heartbeating (SDK default: every
//     second) is hb_cpu_pct, in % of one core.
//  3. flips: -flips (20) NAIVE updates move the flip service between v1
//     and v2, one after the other, without load. For each, the time from
//     the switch (the update's switched_at) to the moment the last sidecar
//     of a service that declares a call to it sends the RoutingAck of a
//     table naming the new default (seen on the wire by a gRPC interceptor
//     on the SDK's stream); routing_p99_ms is their p99. No flip starts
//     after -flips-budget: the figure then names how many it is over,
//     e.g. "812.0(7/20)".
//  4. load: closed-loop transactions (-workers at once, at most -rate a
//     second) begin at entry services and walk the mesh (each sub-
//     transaction calls up to -fanout of its successors, each once or
//     twice, leaning towards the CV service; at most -max-calls calls per
//     transaction). After a third of -duration a CV update of the CV
//     service starts; update_prepare_ms is its PREPARING phase (history:
//     PREPARING to the next phase); violations is what the oracle saw from
//     its start until 1 s after it is DONE. rate is the transactions/s the
//     coordinator applied over the load (its coordinator_events_total of
//     END). With -naive (default), NAIVE updates of the same service back
//     to its first version follow under the same load (up to 5, until the oracle sees a
//     violation), printed on a line of their own.
//  5. rss_mb is the coordinator's VmRSS after the load (or when
//     registration gave up).
//
// -idle-only stops after phase 2 (rss_mb is then taken after the idle
// window), to measure hb_cpu_pct alone in about a minute.
//
// The coordinator child runs with coordinatord's defaults (quotas, GC
// setting) plus net/http/pprof on a loopback port; -profile-dir saves its
// heap after registration and after the load, and CPU profiles of the
// idle phase (taken after its window, as long as -idle, at least 10 s), the
// flips and the load (10 s each). The sidecars heartbeat at the SDK's
// default (sidecar.DefaultHeartbeatInterval, 5 s; -heartbeat) and run at
// the priority of this process (-nice). Every child process is killed when
// this one exits, also on a panic or a signal.
//
// The last line:
//
//	sidecars=2000 services=1000 register_s=R rss_mb=M hb_cpu_pct=H routing_p99_ms=T update_prepare_ms=P rate=E violations=V
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	_ "net/http/pprof" // the child's profiles, on a loopback port of its own
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/internal/benchproc"
	"github.com/coordinator/coordinator/internal/loadsim"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/sidecar"
)

// settleQuiet is how long no routing table may reach any sidecar before
// routing is taken as settled and the idle phase begins.
var settleQuiet = 2 * time.Second

// options are the benchmark's flags.
type options struct {
	sidecars, services, layers int
	seed                       uint64
	workers, rate              int
	fanout, maxCalls, maxMS    int
	duration, idle             time.Duration
	flips                      int
	naive                      bool
	startConcurrency           int
	registerTimeout            time.Duration
	phaseTimeout               time.Duration
	profileDir                 string
	nice                       int
	heartbeat                  time.Duration
	flipsBudget                time.Duration
	idleOnly                   bool
}

func main() {
	var o options
	flag.IntVar(&o.sidecars, "sidecars", 2000, "sidecars (SDK clients, one stream each)")
	flag.IntVar(&o.services, "services", 0, "services (default: half of -sidecars)")
	flag.IntVar(&o.layers, "layers", 5, "layers of the mesh")
	flag.Uint64Var(&o.seed, "seed", 0, "random seed of the mesh (0: from the clock; printed)")
	flag.IntVar(&o.workers, "workers", 64, "transactions run at once by the load (closed loop)")
	flag.IntVar(&o.rate, "rate", 5000, "most transactions per second the load starts (0: no bound)")
	flag.IntVar(&o.fanout, "fanout", 2, "most successors a sub-transaction calls")
	flag.IntVar(&o.maxCalls, "max-calls", 12, "most calls of one transaction")
	flag.IntVar(&o.maxMS, "max-ms", 20, "a transaction's work budget is 1 to this many ms")
	flag.DurationVar(&o.duration, "duration", 30*time.Second, "length of the load (the CV update starts after a third of it)")
	flag.DurationVar(&o.idle, "idle", 10*time.Second, "window of the idle CPU measure")
	flag.IntVar(&o.flips, "flips", 20, "NAIVE flips timed for routing propagation")
	flag.DurationVar(&o.flipsBudget, "flips-budget", 6*time.Minute, "no flip starts after this long in the flips phase (routing_p99_ms then says over how many flips, e.g. 812.0(7/20))")
	flag.BoolVar(&o.naive, "naive", true, "after the CV update, NAIVE updates of the same service under the same load (the oracle must see violations)")
	flag.IntVar(&o.startConcurrency, "start-concurrency", 0, "sidecars connecting at once (0: all)")
	flag.DurationVar(&o.registerTimeout, "register-timeout", 3*time.Minute, "bound of the registration phase")
	flag.DurationVar(&o.phaseTimeout, "phase-timeout", 2*time.Minute, "bound of every other phase (an update, a flip's propagation, the settling of routing)")
	flag.StringVar(&o.profileDir, "profile-dir", "", "if set, save the coordinator's heap profiles (after registration, after the load) and a CPU profile of the idle phase there")
	flag.IntVar(&o.nice, "nice", 0, "nice value of the simulated sidecars (this process, not the coordinator's child); above 0 the coordinator gets the CPU first, but sidecars that cannot keep up with reading their tables then stall its streams")
	flag.DurationVar(&o.heartbeat, "heartbeat", 0, "heartbeat interval of the sidecars (0: the SDK's default, sidecar.DefaultHeartbeatInterval; lease TTL 3 intervals, at least the coordinator's minimum of 6s)")
	flag.BoolVar(&o.idleOnly, "idle-only", false, "stop after the idle phase (registration, then hb_cpu_pct): the later figures print \"skipped\" and rss_mb is taken then")
	serve := flag.String("serve", "", "internal: run the coordinator on this data directory and print its addresses")
	flag.Parse()
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	if *serve != "" {
		runCoordinator(*serve)
		return
	}
	if o.services == 0 {
		o.services = o.sidecars / 2
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			log.Fatal(err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	r, err := run(ctx, o)
	if err != nil {
		log.Print(err)
	}
	if r != nil {
		if r.naiveLine != "" {
			fmt.Println(r.naiveLine)
		}
		fmt.Println(r.line())
	}
	if err != nil {
		stop()
		os.Exit(1)
	}
}

// result holds each figure as printed: a number, or why there is none.
type result struct {
	o                                            options
	register, rss, hbCPU, routing, prepare, rate string
	violations                                   string
	naiveLine                                    string
}

func (r *result) line() string {
	return fmt.Sprintf("sidecars=%d services=%d register_s=%s rss_mb=%s hb_cpu_pct=%s routing_p99_ms=%s update_prepare_ms=%s rate=%s violations=%s",
		r.o.sidecars, r.o.services, r.register, r.rss, r.hbCPU, r.routing, r.prepare, r.rate, r.violations)
}

// run runs the phases; a phase that fails or times out leaves its figures
// and those of the later phases that need it as it says, and the returned
// result is still printed.
func run(ctx context.Context, o options) (*result, error) {
	r := &result{o: o, register: "skipped", rss: "skipped", hbCPU: "skipped", routing: "skipped",
		prepare: "skipped", rate: "skipped", violations: "skipped"}
	rng := rand.New(rand.NewPCG(o.seed, 0x6d657368))
	m, err := newMesh(o.services, o.layers, rng)
	if err != nil {
		return nil, err
	}
	cvIdx, flipIdx := m.targets()
	cvSvc, flipSvc := m.names[cvIdx], m.names[flipIdx]
	insts, err := m.instances(o.sidecars, cvIdx, flipIdx)
	if err != nil {
		return nil, err
	}
	edges := 0
	for _, d := range m.deps {
		edges += len(d)
	}
	log.Printf("mesh: seed=%d services=%d layers=%d edges=%d sidecars=%d; CV update of %s (%d callers), NAIVE flips of %s (%d callers)",
		o.seed, o.services, o.layers, edges, len(insts), cvSvc, len(m.callers[cvIdx]), flipSvc, len(m.callers[flipIdx]))

	dir, err := os.MkdirTemp("", "bench-mesh-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	co, err := startCoordinator(dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if co.StopWithin(20 * time.Second) {
			log.Print("coordinator did not stop within 20 s of SIGTERM: killed")
		}
	}()
	if o.nice != 0 {
		if err := renice(o.nice); err != nil {
			log.Printf("renice: %v", err)
		}
	}
	conn, err := grpc.NewClient(co.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	sdk := newSDKLog()
	defer func() {
		log.Printf("coordinator: %.0f leader terms; in the current term %.0f registrations, self-preservation activated %.0f times; SDK warnings since the last report: %s",
			co.metric("coordinator_leader_terms_total"), co.metric("coordinator_registrations_total"),
			co.metric("coordinator_self_preservation_activations_total"), sdk.summary())
	}()
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)

	// 1. Registration.
	var rstats routingStats
	trackers := map[string]*tracker{}
	graph := loadsim.Graph{}
	for i, name := range m.names {
		if len(m.deps[i]) > 0 {
			graph[name] = m.depNames(i)
		}
	}
	for _, inst := range insts {
		trackers[inst] = newTracker(&rstats, flipSvc, cvSvc)
	}
	towardCV := m.reaching(cvIdx)
	var ready atomic.Int64
	cfg := loadsim.Config{Coordinators: []string{co.grpc}, Graph: graph, Instances: insts,
		CallTimeout:       o.phaseTimeout,
		HeartbeatInterval: o.heartbeat,
		StartConcurrency:  o.startConcurrency,
		Configure: func(inst string, c *sidecar.Config) {
			c.DialOptions = append(c.DialOptions, trackers[inst].dialOption())
			c.Logger = slog.New(sdk)
		},
		OnReady: func(string) { ready.Add(1) },
		Choose: func(svc string, next []string, rng *rand.Rand) []string {
			return choose(m, towardCV, next, o.fanout, rng)
		},
		MaxCalls: o.maxCalls,
	}
	if cfg.StartConcurrency == 0 {
		cfg.StartConcurrency = len(insts)
	}
	rctx, cancel := context.WithTimeout(ctx, o.registerTimeout)
	defer cancel()
	began := time.Now()
	if o.profileDir != "" {
		// Profiles of the coordinator as the registration gives up, taken
		// before the clients are closed.
		go func() {
			select {
			case <-time.After(o.registerTimeout - 12*time.Second):
			case <-rctx.Done():
				return
			}
			go co.saveProfile(rctx, "profile", 10, filepath.Join(o.profileDir, fmt.Sprintf("cpu-registering-%d.pb.gz", o.sidecars)))
			sleep(rctx, 9*time.Second)
			co.saveProfile(ctx, "heap", 0, filepath.Join(o.profileDir, fmt.Sprintf("heap-registering-%d.pb.gz", o.sidecars)))
		}()
	}
	done := make(chan struct{})
	go progress(done, "registered", len(insts), &ready, co)
	sim, err := loadsim.Start(rctx, cfg)
	close(done)
	cancel()
	regTook := time.Since(began)
	if err != nil {
		r.register = "timeout"
		r.rss = strconv.Itoa(co.RSSMB())
		log.Printf("registration: %d of %d sidecars ready after %v (%d routing tables received); giving up: %v",
			ready.Load(), len(insts), regTook.Round(time.Millisecond), rstats.tables.Load(), err)
		if ctx.Err() != nil {
			r.register = "interrupted"
		}
		return r, nil
	}
	defer func() {
		t := time.Now()
		sim.Close()
		log.Printf("sidecars closed in %v", time.Since(t).Round(time.Millisecond))
	}()
	r.register = fmt.Sprintf("%.1f", regTook.Seconds())
	log.Printf("registration: %d sidecars ready in %v; %d routing tables received so far; coordinator rss %d MB, heap in use %.0f MB",
		len(insts), regTook.Round(time.Millisecond), rstats.tables.Load(), co.RSSMB(), co.metric("go_memstats_heap_inuse_bytes")/(1<<20))
	log.Printf("SDK warnings during registration: %s", sdk.summary())
	if o.profileDir != "" {
		co.saveProfile(ctx, "heap", 0, filepath.Join(o.profileDir, fmt.Sprintf("heap-registered-%d.pb.gz", o.sidecars)))
	}

	// 2. Idle: wait until routing settles, then measure CPU.
	settled := time.Now()
	for {
		last := time.Unix(0, rstats.last.Load())
		if time.Since(last) >= settleQuiet {
			log.Printf("routing settled: the last table reached a sidecar %v after registration ended (%d tables in all); rss %d MB",
				last.Sub(began.Add(regTook)).Round(time.Millisecond), rstats.tables.Load(), co.RSSMB())
			break
		}
		if time.Since(settled) > o.phaseTimeout || ctx.Err() != nil {
			log.Printf("routing did not settle within %v: tables still arriving (%d in all)", o.phaseTimeout, rstats.tables.Load())
			r.hbCPU = "timeout"
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	{
		// Measured even when routing did not settle, and then logged as
		// such: the figure printed stays "timeout" (the sessions were not
		// idle).
		unsettled := r.hbCPU == "timeout"
		if o.profileDir != "" {
			// A collection first, so that heap-idle less this is what the
			// idle phase allocated (a heap profile's allocations are those
			// of completed cycles). It also collects what registering left,
			// which the window would otherwise see collected or not: a
			// profiling run's hb_cpu_pct is not comparable with a plain one.
			co.saveProfile(ctx, "heap?gc=1", 0, filepath.Join(o.profileDir, fmt.Sprintf("heap-idle-start-%d.pb.gz", o.sidecars)))
		}
		hb0 := co.metric("coordinator_heartbeats_total")
		c0, ok0 := co.CPU()
		t0 := time.Now()
		sleep(ctx, o.idle)
		c1, ok1 := co.CPU()
		win := time.Since(t0)
		hb1 := co.metric("coordinator_heartbeats_total")
		switch {
		case ok0 && ok1 && ctx.Err() == nil && unsettled:
			log.Printf("not idle (routing still churning): %v of CPU in %v (%.0f%% of a core; %.0f heartbeats/s)", (c1 - c0).Round(time.Millisecond),
				win.Round(time.Millisecond), 100*(c1-c0).Seconds()/win.Seconds(), (hb1-hb0)/win.Seconds())
		case ok0 && ok1 && ctx.Err() == nil:
			r.hbCPU = fmt.Sprintf("%.1f", 100*(c1-c0).Seconds()/win.Seconds())
			log.Printf("idle: %v of CPU in %v (%.0f heartbeats/s)", (c1 - c0).Round(time.Millisecond), win.Round(time.Millisecond), (hb1-hb0)/win.Seconds())
		case !unsettled:
			r.hbCPU = "unavailable"
		}
		if o.profileDir != "" {
			name := "cpu-idle"
			if unsettled {
				name = "cpu-unsettled"
			}
			co.saveProfile(ctx, "profile", max(10, int(o.idle.Seconds())), filepath.Join(o.profileDir, fmt.Sprintf("%s-%d.pb.gz", name, o.sidecars)))
			// What the idle phase allocated: go tool pprof
			// -sample_index=alloc_space -diff_base
			// heap-idle-start-N.pb.gz heap-idle-N.pb.gz.
			co.saveProfile(ctx, "heap?gc=1", 0, filepath.Join(o.profileDir, fmt.Sprintf("heap-idle-%d.pb.gz", o.sidecars)))
		}
	}

	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	if o.idleOnly {
		r.rss = strconv.Itoa(co.RSSMB())
		return r, nil
	}

	// 3. NAIVE flips of flipSvc, without load. Routing is scoped: only the
	// sidecars of its callers hold flipSvc's route (and only those of
	// cvSvc's callers hold cvSvc's), so they are the ones watched.
	callersOf := func(idx int) []*tracker {
		var ts []*tracker
		for _, inst := range insts {
			svc, _, _ := strings.Cut(inst, "@")
			if slices.Contains(m.callers[idx], m.index[svc]) {
				ts = append(ts, trackers[inst])
			}
		}
		return ts
	}
	callers, callersCV := callersOf(flipIdx), callersOf(cvIdx)
	if len(callers) == 0 || len(callersCV) == 0 {
		return r, fmt.Errorf("mesh: %s or %s has no caller", flipSvc, cvSvc)
	}
	// The first version of a service to register is its default: with
	// every sidecar connecting at once, that may be v2.
	initial := []string{callers[0].defaults()[0], callersCV[0].defaults()[1]}
	log.Printf("default versions after registration (as their callers' sidecars hold them): %s %s, %s %s", flipSvc, initial[0], cvSvc, initial[1])
	if initial[0] == "" || initial[1] == "" {
		return r, fmt.Errorf("mesh: a caller's sidecar holds no route of %s or %s after registration", flipSvc, cvSvc)
	}
	var lat []time.Duration
	flipsOK := true
	var flipErr error // nil when a flip's propagation timed out
	if o.profileDir != "" {
		go co.saveProfile(ctx, "profile", 10, filepath.Join(o.profileDir, fmt.Sprintf("cpu-flips-%d.pb.gz", o.sidecars)))
	}
	flips0 := time.Now()
	for i := range o.flips {
		if time.Since(flips0) > o.flipsBudget {
			log.Printf("flips: budget of %v spent after %d flips", o.flipsBudget, i)
			break
		}
		to := other(initial[0])
		if i%2 == 1 {
			to = initial[0]
		}
		u, err := runUpdate(ctx, admin, flipSvc, to, pb.Strategy_STRATEGY_NAIVE, o.phaseTimeout)
		if err != nil {
			log.Printf("flip %d of %s to %s: %v", i+1, flipSvc, to, err)
			flipsOK, flipErr = false, err
			break
		}
		sw := u.GetSwitchedAt().AsTime()
		last, ok := waitAcked(ctx, callers, to, o.phaseTimeout)
		if !ok {
			log.Printf("flip %d of %s to %s: not every caller's sidecar acknowledged it within %v", i+1, flipSvc, to, o.phaseTimeout)
			flipsOK = false
			break
		}
		lat = append(lat, last.Sub(sw))
		if o.flips >= 10 && (i+1)%5 == 0 {
			log.Printf("flips: %d done in %v, the last one's callers acknowledged %v after its switch", i+1, time.Since(flips0).Round(time.Millisecond), last.Sub(sw).Round(time.Millisecond))
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		log.Printf("flips: %d; switch to the last caller's ack (%d sidecars): p50 %v max %v",
			len(lat), len(callers), lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)-1].Round(time.Microsecond))
	}
	switch {
	case flipsOK && len(lat) == o.flips:
		r.routing = fmt.Sprintf("%.1f", float64(pick(lat, 99).Microseconds())/1000)
	case flipsOK && len(lat) > 0:
		r.routing = fmt.Sprintf("%.1f(%d/%d)", float64(pick(lat, 99).Microseconds())/1000, len(lat), o.flips)
	case !flipsOK && flipErr != nil:
		r.routing = failure(flipErr)
	case !flipsOK:
		r.routing = "timeout"
	}

	log.Printf("SDK warnings until the flips ended: %s", sdk.summary())
	if ctx.Err() != nil {
		return r, ctx.Err()
	}

	// 4. Load, with the CV update in its middle and NAIVE ones after it.
	entries := m.entries()
	var entryAll, entryCV []string
	for _, inst := range insts {
		svc, rest, _ := strings.Cut(inst, "@")
		i := m.index[svc]
		if m.layer[i] != 0 || !strings.HasPrefix(rest, "v1") {
			continue
		}
		entryAll = append(entryAll, inst)
		if towardCV[i] {
			entryCV = append(entryCV, inst)
		}
	}
	log.Printf("load: %d entry services (%d of them reach %s), %d workers, at most %d/s", len(entries), countTrue(entries, towardCV), cvSvc, o.workers, o.rate)
	var txnOK atomic.Int64
	end0 := co.metricLabel("coordinator_events_total", "type", "END")
	load0 := time.Now()
	stopLoad := sim.Drive(ctx, o.workers, o.rate, func(ctx context.Context, rng *rand.Rand) {
		entry := entryAll[rng.IntN(len(entryAll))]
		if len(entryCV) > 0 && rng.IntN(5) < 4 {
			entry = entryCV[rng.IntN(len(entryCV))]
		}
		if sim.TxnAt(ctx, entry, time.Duration(1+rng.IntN(o.maxMS))*time.Millisecond, rng) {
			txnOK.Add(1)
		}
	})
	loadStopped := false
	stopAll := func() {
		if !loadStopped {
			loadStopped = true
			stopLoad()
		}
	}
	defer stopAll()
	sleep(ctx, o.duration/3)
	v0 := sim.Violations()
	log.Printf("load: %d transactions in %v (%d failed); starting the CV update of %s",
		sim.Requests(), time.Since(load0).Round(time.Millisecond), sim.Failed(), cvSvc)
	if o.profileDir != "" {
		go co.saveProfile(ctx, "profile", 10, filepath.Join(o.profileDir, fmt.Sprintf("cpu-load-%d.pb.gz", o.sidecars)))
	}
	for _, t := range callersCV {
		t.resetUpdateMode()
	}
	u, err := runUpdate(ctx, admin, cvSvc, other(initial[1]), pb.Strategy_STRATEGY_CV, o.phaseTimeout)
	logUpdateModeAcks(u, callersCV)
	switch {
	case err != nil:
		log.Printf("CV update of %s: %v", cvSvc, err)
		r.prepare, r.violations = failure(err), failure(err)
		if u != nil {
			if p, ok := prepared(u); ok {
				r.prepare = strconv.FormatInt(p.Milliseconds(), 10)
			}
		}
	default:
		sleep(ctx, time.Second)
		r.violations = strconv.FormatInt(sim.Violations()-v0, 10)
		if p, ok := prepared(u); ok {
			r.prepare = strconv.FormatInt(p.Milliseconds(), 10)
		} else {
			r.prepare = "unavailable"
		}
		log.Printf("CV update of %s: %s, history %s", cvSvc, u.GetPhase(), history(u))
		if v := sim.FirstViolation(); v != "" && sim.Violations() > v0 {
			log.Printf("first violation: %s", v)
		}
	}
	if rest := o.duration - time.Since(load0); rest > 0 {
		sleep(ctx, rest)
	}
	if o.naive && err == nil {
		r.naiveLine = naivePhase(ctx, o, sim, admin, cvSvc, initial[1])
	}
	queued := 0
	for _, inst := range insts {
		queued += sim.Client(inst).Stats().Queued
	}
	end1 := co.metricLabel("coordinator_events_total", "type", "END")
	win := time.Since(load0)
	stopAll()
	if ctx.Err() != nil {
		r.rate = "interrupted"
		return r, ctx.Err()
	}
	r.rate = fmt.Sprintf("%.0f", (end1-end0)/win.Seconds())
	log.Printf("load: %d transactions started in %v, %d succeeded, %d failed (first error: %v); the coordinator applied %.0f ENDs; %d events unacknowledged at the end",
		sim.Requests(), win.Round(time.Millisecond), txnOK.Load(), sim.Failed(), sim.FirstError(), end1-end0, queued)
	r.rss = strconv.Itoa(co.RSSMB())
	log.Printf("after the load: rss %s MB, heap in use %.0f MB", r.rss, co.metric("go_memstats_heap_inuse_bytes")/(1<<20))
	if o.profileDir != "" {
		co.saveProfile(ctx, "heap", 0, filepath.Join(o.profileDir, fmt.Sprintf("heap-loaded-%d.pb.gz", o.sidecars)))
	}
	return r, ctx.Err()
}

// naivePhase runs NAIVE updates of svc under the running load, back to
// its initial version and forth again, until the oracle sees a violation (at most 5), and
// returns their line.
func naivePhase(ctx context.Context, o options, sim *loadsim.Sim, admin pb.AdminServiceClient, svc, initial string) string {
	v0 := sim.Violations()
	n := 0
	for n < 5 && sim.Violations() == v0 && ctx.Err() == nil {
		to := initial
		if n%2 == 1 {
			to = other(initial)
		}
		n++
		if _, err := runUpdate(ctx, admin, svc, to, pb.Strategy_STRATEGY_NAIVE, o.phaseTimeout); err != nil {
			log.Printf("NAIVE update %d of %s: %v", n, svc, err)
			return fmt.Sprintf("naive: sidecars=%d services=%d updates=%d violations=failed", o.sidecars, o.services, n)
		}
		sleep(ctx, time.Second)
	}
	v := sim.Violations() - v0
	if v > 0 {
		log.Printf("NAIVE: first violation: %s", firstLines(sim.FirstViolation(), 8))
	} else {
		log.Printf("NAIVE: the oracle saw no violation in %d updates", n)
	}
	return fmt.Sprintf("naive: sidecars=%d services=%d updates=%d violations=%d", o.sidecars, o.services, n, v)
}

// choose picks the successors a sub-transaction calls: up to fanout of
// them at random, one of them leaning (4 in 5) towards the CV service when
// any reaches it, so that most transactions use it and many use it twice.
func choose(m *mesh, toward []bool, next []string, fanout int, rng *rand.Rand) []string {
	out := slices.Clone(next)
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	out = out[:min(fanout, len(out))]
	if rng.IntN(5) == 0 {
		return out
	}
	for _, s := range out {
		if toward[m.index[s]] {
			return out
		}
	}
	for _, s := range next {
		if toward[m.index[s]] {
			out[0] = s
			break
		}
	}
	return out
}

// runUpdate starts an update and waits, within timeout, until it ends; it
// returns the update as last seen and an error unless it is DONE.
func runUpdate(ctx context.Context, admin pb.AdminServiceClient, svc, to string, k pb.Strategy, timeout time.Duration) (*pb.Update, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u, err := admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: svc, ToVersion: to, Strategy: k,
		PrepareTimeout: durationpb.New(timeout)})
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	for {
		g, err := admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		if err != nil {
			return u, fmt.Errorf("in %s after %v: %w", u.GetPhase(), time.Since(u.GetCreatedAt().AsTime()).Round(time.Millisecond), err)
		}
		u = g
		if g.FinishedAt != nil && g.Progress == nil {
			if g.Phase != pb.Phase_PHASE_DONE {
				return g, fmt.Errorf("ended %s: %s", g.Phase, g.Reason)
			}
			return g, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// prepared is how long u was PREPARING, from its history.
func prepared(u *pb.Update) (time.Duration, bool) {
	h := u.GetHistory()
	for i := 0; i+1 < len(h); i++ {
		if h[i].GetPhase() == pb.Phase_PHASE_PREPARING {
			return h[i+1].GetAt().AsTime().Sub(h[i].GetAt().AsTime()), true
		}
	}
	return 0, false
}

func history(u *pb.Update) string {
	var b strings.Builder
	t0 := u.GetCreatedAt().AsTime()
	for _, h := range u.GetHistory() {
		fmt.Fprintf(&b, " %s@+%v", strings.TrimPrefix(h.GetPhase().String(), "PHASE_"), h.GetAt().AsTime().Sub(t0).Round(time.Microsecond))
	}
	return strings.TrimSpace(b.String())
}

// waitAcked waits until every tracker's client acknowledged a table naming
// version as the default, and returns the latest of those moments.
func waitAcked(ctx context.Context, ts []*tracker, version string, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for {
		var last time.Time
		all := true
		for _, t := range ts {
			v, at := t.ackedDefault()
			if v != version {
				all = false
				break
			}
			if at.After(last) {
				last = at
			}
		}
		if all {
			return last, true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Time{}, false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// pick is the q-th percentile of sorted d (q=100: the largest).
func pick(d []time.Duration, q int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := (len(d)*q + 99) / 100
	return d[min(max(i-1, 0), len(d)-1)]
}

// failure is how a figure whose phase ended with err is printed: "timeout"
// when its bound expired, "failed" when the coordinator refused or ended
// it otherwise (the log says why).
func failure(err error) string {
	if errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded {
		return "timeout"
	}
	return "failed"
}

// other is the version the updates move a service to from v.
func other(v string) string {
	if v == "v2" {
		return "v1"
	}
	return "v2"
}

func countTrue(idx []int, set []bool) int {
	n := 0
	for _, i := range idx {
		if set[i] {
			n++
		}
	}
	return n
}

func firstLines(s string, n int) string {
	l := strings.SplitN(s, "\n", n+1)
	if len(l) > n {
		l = append(l[:n], "  ...")
	}
	return strings.Join(l, "\n")
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// progress logs the registration's progress every 5 s until done closes.
func progress(done <-chan struct{}, what string, total int, n *atomic.Int64, co *coordinatorProc) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	began := time.Now()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			log.Printf("%s: %d of %d after %v; coordinator rss %d MB", what, n.Load(), total, time.Since(began).Round(time.Second), co.RSSMB())
		}
	}
}

// coordinatorProc is the coordinator's process and its addresses.
type coordinatorProc struct {
	*benchproc.Proc
	grpc, http, pprof string
}

func startCoordinator(dir string) (*coordinatorProc, error) {
	p, err := benchproc.Start("-serve", dir)
	if err != nil {
		return nil, err
	}
	f := strings.Fields(p.Line)
	if len(f) != 3 {
		p.Stop()
		return nil, fmt.Errorf("coordinator printed %q: want its gRPC, HTTP and pprof addresses", p.Line)
	}
	return &coordinatorProc{Proc: p, grpc: f[0], http: f[1], pprof: f[2]}, nil
}

// metric reads an unlabelled metric from /metrics (0 if absent).
func (c *coordinatorProc) metric(name string) float64 { return c.metricLabel(name, "", "") }

// metricLabel reads a metric from /metrics: the unlabelled one, or the
// sum of those whose label has value.
func (c *coordinatorProc) metricLabel(name, label, value string) float64 {
	hc := http.Client{Timeout: 30 * time.Second}
	resp, err := hc.Get("http://" + c.http + "/metrics")
	if err != nil {
		log.Printf("/metrics: %v", err)
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	sum := 0.0
	for sc.Scan() {
		l := sc.Text()
		var rest string
		if label == "" {
			v, ok := strings.CutPrefix(l, name+" ")
			if !ok {
				continue
			}
			rest = v
		} else {
			if !strings.HasPrefix(l, name+"{") || !strings.Contains(l, label+`="`+value+`"`) {
				continue
			}
			_, rest, _ = strings.Cut(l, "} ")
		}
		f, _ := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		sum += f
	}
	return sum
}

// saveProfile saves the child's pprof profile (heap, or a CPU profile of
// seconds) to path.
func (c *coordinatorProc) saveProfile(ctx context.Context, kind string, seconds int, path string) {
	url := "http://" + c.pprof + "/debug/pprof/" + kind
	if seconds > 0 {
		url += "?seconds=" + strconv.Itoa(seconds)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := (&http.Client{Timeout: time.Duration(seconds)*time.Second + time.Minute}).Do(req)
	if err == nil && resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		err = errors.New(resp.Status)
	}
	if err != nil {
		log.Printf("profile %s: %v", kind, err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err == nil {
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		log.Printf("profile %s: %v", kind, err)
		return
	}
	log.Printf("saved %s", path)
}

// runCoordinator is the child: a coordinator as coordinatord runs one, on
// loopback with its embedded etcd and the default settings and quotas,
// plus net/http/pprof on a loopback port of its own, until SIGTERM. It
// prints its gRPC, HTTP and pprof addresses.
func runCoordinator(dir string) {
	debug.SetGCPercent(server.GCPercent())
	defer server.StartGCHeadroom(server.DefaultGCHeadroom)()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() { _ = http.Serve(lis, nil) }()
	srv, err := server.Start(ctx, server.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := srv.WaitLeading(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(srv.GRPCAddr(), srv.HTTPAddr(), lis.Addr())
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Close(cctx); err != nil {
		log.Printf("coordinator close: %v", err)
	}
}

// logUpdateModeAcks says how long after the update began the sidecars of
// the updated service's callers sent the ack of update mode (on the wire,
// as the tracker sees it), so that a slow prepare handshake can be told
// between the sidecars' side (receiving, applying and sending behind their
// queued events) and the coordinator's (reading the acks behind those
// events, and deciding).
func logUpdateModeAcks(u *pb.Update, callers []*tracker) {
	h := u.GetHistory()
	if len(h) == 0 {
		return
	}
	start := h[0].GetAt().AsTime()
	var lastRecv, lastAck time.Duration
	n := 0
	for _, t := range callers {
		if at := t.updateModeAckedAt(); !at.IsZero() {
			n++
			lastAck = max(lastAck, at.Sub(start))
			lastRecv = max(lastRecv, t.updateModeReceivedAt().Sub(start))
		}
	}
	log.Printf("prepare: %d of %d caller sidecars acknowledged update mode; the last received it %v and sent its ack %v after PREPARING began",
		n, len(callers), lastRecv.Round(time.Millisecond), lastAck.Round(time.Millisecond))
}
