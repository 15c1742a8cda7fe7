// Command update measures updates under load: simulated services that use
// the Go SDK in-process (no HTTP, so the SDK's own cost is what is
// measured) run 500 transactions/s of 1 to 50 ms over a 6-service graph
// while svc-d is updated from v1 to v2 with each strategy. The coordinator
// runs as it is deployed: in a process of its own (this program
// re-executed), on its embedded etcd, with coordinatord's garbage-collector
// setting; the simulated services keep Go's defaults. It prints, per
// strategy, the time from the request to the switch and to DONE, the
// latency the SDK adds to a call outside and during the update, the calls
// BF held, and the rate and p99 latency of calls decided by the
// coordinator, ending with one line per strategy:
//
//	strategy=S switch_ms=A done_ms=B added_p99_us=C held=H pinned_calls_per_s=P pinned_p99_ms=Q violations=V tls=T
//
// -strategies canary runs cv as a canary (-canary-steps, each promoted
// after -canary-step) and prints, before its strategy=canary line, one line
// per step with the weight asked and the share of the transactions new to
// svc-d that its instances recorded serving on v2:
//
//	canary step=K asked_pct=A served_pct=S txns=N
//
// -strategies set updates svc-c and svc-d together (DESIGN.md §4.8), once
// under each strategy of -set-under, with a line per run that says which:
//
//	strategy=set under=S switch_ms=A ... violations=V tls=T
//
// where V also counts the transactions that ran the set mixed (svc-c at
// one side, svc-d at the other).
//
// -strategies lane creates the lane gray (svc-c=v2 svc-d=v2), tags 30 % of
// the roots x-lane: gray, and promotes the lane (one set update of svc-c
// and svc-d) under each strategy of -lane-under:
//
//	strategy=lane under=S switch_ms=A ... violations=V lane_txns=N left_lane=L tls=T
//
// where V also counts the transactions that left their lane (L).
//
// -tls on runs the coordinator with TLS on its listeners, client
// certificates required of the sidecars and the identity policy checked
// (internal/benchtls), and the clients with their certificate; -tls both
// runs each strategy without TLS, then with it, side by side (T is off or
// on).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/internal/benchproc"
	"github.com/coordinator/coordinator/internal/benchtls"
	"github.com/coordinator/coordinator/internal/loadsim"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/tlsfiles"
	"github.com/coordinator/coordinator/sidecar"
)

// The graph: a -> b, c; b -> d, e; c -> d; d -> f. The updated service is d,
// reachable on two paths and called up to twice per caller.
var graph = loadsim.Graph{"svc-a": {"svc-b", "svc-c"}, "svc-b": {"svc-d", "svc-e"}, "svc-c": {"svc-d"}, "svc-d": {"svc-f"}}

const target = "svc-d"

var wfTimeout time.Duration

var strategyOf = map[string]pb.Strategy{"cv": pb.Strategy_STRATEGY_CV, "bf": pb.Strategy_STRATEGY_BF, "wf": pb.Strategy_STRATEGY_WF,
	"canary": pb.Strategy_STRATEGY_CV}

// canary is the canary run in progress (-strategies canary); nil otherwise.
var canary *canaryBench

func main() {
	rate := flag.Int("rate", 500, "transactions per second")
	warm := flag.Duration("warmup", 2*time.Second, "load before each update (measures calls outside an update)")
	flag.DurationVar(&wfTimeout, "wf-timeout", 10*time.Second, "WF: abort when the service is not free within this time")
	hold := flag.Duration("cv-hold", 2*time.Second, "CV: how long a transaction keeps the old version in use, so the rate of decided calls is measured over this window")
	strategies := flag.String("strategies", "cv,bf,wf", "comma-separated strategies to run, in order (cv, bf, wf, canary; set: a set update under each of -set-under)")
	canarySteps := flag.String("canary-steps", "5,25,50,100", "canary: the weights of the steps, in percent")
	canaryStep := flag.Duration("canary-step", 10*time.Second, "canary: how long each step runs")
	setUnder := flag.String("set-under", "cv,wf,bf", "with -strategies set: the strategies the set update runs under, in order (naive too)")
	laneUnder := flag.String("lane-under", "cv,wf,bf", "with -strategies lane: the strategies the lane's promotion runs under, in order")
	serve := flag.String("serve", "", "internal: run the coordinator on this data directory and print its gRPC address")
	tlsMode := flag.String("tls", "off", "off, on (TLS and client certificates everywhere), or both (each strategy off, then on)")
	tlsDir := flag.String("tls-dir", "", "internal: with -serve, serve with the TLS files of internal/benchtls in this directory")
	flag.Parse()
	log.SetFlags(0)
	if *serve != "" {
		runCoordinator(*serve, *tlsDir)
		return
	}
	modes := map[string][]bool{"off": {false}, "on": {true}, "both": {false, true}}[*tlsMode]
	if modes == nil {
		log.Fatalf("-tls %q: want off, on or both", *tlsMode)
	}
	var lines []string
	for _, name := range strings.Split(*strategies, ",") {
		if name = strings.TrimSpace(name); name == "set" || name == "lane" {
			unders := *setUnder
			if name == "lane" {
				unders = *laneUnder
			}
			for _, under := range strings.Split(unders, ",") {
				k, ok := setStrategyOf[strings.TrimSpace(under)]
				if !ok {
					log.Fatalf("-set-under: unknown strategy %q (want cv, wf, bf or naive)", under)
				}
				if name == "lane" && k == pb.Strategy_STRATEGY_NAIVE {
					log.Fatalf("-lane-under: naive is not a promotion strategy")
				}
				for _, withTLS := range modes {
					canary = nil
					lines = append(lines, runOnce(k, *rate, *warm, *hold, withTLS, true, name == "lane"))
				}
			}
			continue
		}
		k, ok := strategyOf[strings.TrimSpace(name)]
		if !ok {
			log.Fatalf("-strategies: unknown strategy %q (want cv, bf, wf, canary, set or lane)", name)
		}
		for _, withTLS := range modes {
			canary = nil
			if strings.TrimSpace(name) == "canary" {
				canary = newCanaryBench(*canarySteps, *canaryStep)
			}
			lines = append(lines, runOnce(k, *rate, *warm, *hold, withTLS, false, false))
		}
	}
	for _, l := range lines {
		fmt.Println(l)
	}
}

// runOnce measures one update with strategy k: of svc-d, or with set of
// the set (set.go), or with lane (and set) of the set by promoting the lane
// (lane.go).
func runOnce(k pb.Strategy, rate int, warm, hold time.Duration, withTLS, set, lane bool) string {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "bench-update-")
	check(err)
	defer os.RemoveAll(dir)
	tlsDir, clientTLS, tlsName := "", tlsfiles.Files{}, "off"
	if withTLS {
		tlsDir, tlsName = filepath.Join(dir, "tls"), "on"
		check(os.Mkdir(tlsDir, 0o700))
		f, err := benchtls.Setup(tlsDir)
		check(err)
		clientTLS = f.Client
	}
	addr, stopCoordinator := startCoordinator(dir, tlsDir)
	defer stopCoordinator()
	instances := []string{"svc-a@v1", "svc-b@v1", "svc-c@v1", "svc-d@v1", "svc-e@v1", "svc-f@v1", "svc-d@v2"}
	if set {
		instances = append(instances, setInstances...)
	}
	cfg := loadsim.Config{Coordinators: []string{addr}, Graph: graph,
		Instances: instances, Entry: "svc-a",
		Configure: func(_ string, c *sidecar.Config) { c.TLS = clientTLS }}
	if canary != nil {
		cfg.OnServe = canary.onServe
	}
	if lane {
		cfg.LaneTag = laneTag
	}
	s, err := loadsim.Start(ctx, cfg)
	check(err)
	defer s.Close()
	if set {
		s.WatchSet(updatedSet)
	}
	// Let every client learn the others' endpoints.
	time.Sleep(200 * time.Millisecond)
	stopLoad := s.Load(ctx, rate, 50)

	time.Sleep(warm)
	outside, _ := s.Latencies(true)

	creds, err := tlsfiles.DialCredentials(clientTLS, "")
	check(err)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	check(err)
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)
	if lane {
		_, err := admin.CreateLane(ctx, &pb.CreateLaneRequest{Lane: laneDef()})
		check(err)
		time.Sleep(500 * time.Millisecond) // lane transactions run before the promotion
	}
	var blocker func()
	if k == pb.Strategy_STRATEGY_CV && hold > 0 {
		// A transaction that used svc-d@v1 and may call it again keeps v1
		// from draining for `hold`: calls to svc-d are decided meanwhile.
		entry := s.Client("svc-c@v1")
		tctx, _ := entry.Begin(ctx)
		call, err := entry.Route(tctx, target)
		check(err)
		call.Finish()
		blocker = func() { entry.End(tctx) }
		time.AfterFunc(hold, blocker)
	}
	cpu0 := readCPU()
	requested := time.Now()
	// WF may never find the service free under load: bounded, it aborts.
	req := &pb.StartUpdateRequest{Service: target, ToVersion: "v2", Strategy: k, Timeout: durationpb.New(wfTimeout)}
	if canary != nil {
		canary.request(req)
	}
	if set {
		req.Service, req.ToVersion, req.Members = "", "", setMembers()
	}
	var u *pb.Update
	if lane {
		u, err = admin.PromoteLane(ctx, &pb.PromoteLaneRequest{Name: "gray", Strategy: k, Timeout: req.Timeout})
	} else {
		u, err = admin.StartUpdate(ctx, req)
	}
	check(err)
	if canary != nil {
		go canary.drive(ctx, admin, u.Id)
	}
	var switched, done time.Duration
	var held uint32
	for {
		g, err := admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		check(err)
		held = max(held, g.GetProgress().GetHeldCalls())
		if switched == 0 && g.SwitchedAt != nil {
			switched = g.SwitchedAt.AsTime().Sub(requested)
		}
		if g.FinishedAt != nil && g.Progress == nil {
			done = g.FinishedAt.AsTime().Sub(requested)
			if g.Phase != pb.Phase_PHASE_DONE {
				log.Printf("%s update ended %s after %v: %s", k, g.Phase, done.Round(time.Millisecond), g.Reason)
				done = -time.Millisecond // reported as done_ms=-1
			}
			break
		}
		time.Sleep(time.Millisecond)
	}
	window := time.Since(requested)
	var steps string
	if canary != nil {
		steps = canary.lines() // after its last step has run its length
	}
	if steal, ok := cpu0.stealSince(readCPU()); ok {
		// On a shared host the hypervisor may run others on our cores:
		// figures taken with a high steal are not this program's.
		log.Printf("%s: CPU stolen by the hypervisor during the update: %.0f%%", strings.ToLower(k.String()[len("STRATEGY_"):]), steal)
	}
	time.Sleep(200 * time.Millisecond)
	stopLoad()
	_, decided := s.Latencies(false)
	slices.Sort(outside)
	slices.Sort(decided)
	p := func(d []time.Duration, q int) time.Duration {
		if len(d) == 0 {
			return 0
		}
		return d[len(d)*q/100]
	}
	if v := s.FirstViolation(); v != "" {
		log.Printf("%s: first violation: %s", k, v)
	}
	name := strings.ToLower(strings.TrimPrefix(k.String(), "STRATEGY_"))
	if canary != nil {
		name = "canary"
	}
	log.Printf("%s: switch %v after the request, DONE after %v (longest transaction %v); calls outside an update: p50 %v p99 %v (%d); decided calls during it: %d, p50 %v p99 %v; held %d",
		name, switched.Round(time.Microsecond), done.Round(time.Microsecond), s.Longest().Round(time.Millisecond),
		p(outside, 50), p(outside, 99), len(outside), len(decided), p(decided, 50), p(decided, 99), held)
	label := "strategy=" + name
	if set {
		label = "strategy=set under=" + name
		log.Printf("set under %s: %d transactions on two versions of a service, %d on a mixed set", name, s.Violations(), s.MixedSets())
	}
	laneFields := ""
	if lane {
		label = "strategy=lane under=" + name
		laneFields = fmt.Sprintf(" lane_txns=%d left_lane=%d", s.LaneTxns(), s.LeftLane())
		log.Printf("lane promoted under %s: %d lane transactions, %d left their lane", name, s.LaneTxns(), s.LeftLane())
	}
	return steps + fmt.Sprintf("%s switch_ms=%d done_ms=%d added_p99_us=%d held=%d pinned_calls_per_s=%.0f pinned_p99_ms=%.2f violations=%d%s tls="+tlsName,
		label, switched.Milliseconds(), done.Milliseconds(), p(outside, 99).Microseconds(), held,
		float64(len(decided))/window.Seconds(), float64(p(decided, 99).Microseconds())/1000, s.Violations()+s.MixedSets()+s.LeftLane(), laneFields)
}

// startCoordinator runs the coordinator in a child process on dir and
// returns its gRPC address, once it leads, and a func that stops it.
func startCoordinator(dir, tlsDir string) (addr string, stop func()) {
	p, err := benchproc.Start("-serve", dir, "-tls-dir", tlsDir)
	check(err)
	return p.Line, p.Stop
}

// runCoordinator is the child: a coordinator as coordinatord runs one, on
// loopback with its embedded etcd (and the TLS files of internal/benchtls
// in tlsDir, if set), until SIGTERM.
func runCoordinator(dir, tlsDir string) {
	cfg := server.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: dir}
	if tlsDir != "" {
		check(benchtls.At(tlsDir).Configure(&cfg))
	}
	benchproc.Serve(cfg, nil)
}

// cpuTimes are the machine's CPU jiffies: all of them, and those stolen
// by the hypervisor (/proc/stat; zero where it cannot be read).
type cpuTimes struct{ total, steal uint64 }

func readCPU() cpuTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return cpuTimes{}
	}
	var t cpuTimes
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return cpuTimes{}
		}
		if i < 8 { // guest times are already counted in user
			t.total += n
		}
		if i == 7 {
			t.steal = n
		}
	}
	return t
}

// stealSince returns the share of CPU time stolen between t and later, in
// percent.
func (t cpuTimes) stealSince(later cpuTimes) (float64, bool) {
	if later.total <= t.total {
		return 0, false
	}
	return 100 * float64(later.steal-t.steal) / float64(later.total-t.total), true
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
