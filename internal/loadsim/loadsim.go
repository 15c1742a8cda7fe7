// Package loadsim runs simulated services in-process on the Go SDK, with
// an oracle of version consistency: every sub-transaction records the
// version it ran on, and a transaction that ran on two versions of one
// service is a violation. bench/update, bench/failover and the failover
// tests drive updates and coordinator failures under its load.
package loadsim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/coordinator/coordinator/sidecar"
)

// Graph is the static call graph: service -> services it calls.
type Graph map[string][]string

// Config configures a Sim.
type Config struct {
	// Coordinators are the replicas' gRPC addresses.
	Coordinators []string
	Graph        Graph
	// Instances are "service@version", one SDK client each; several
	// instances of one version are told apart by a suffix,
	// "service@version#2". A call goes to the instance whose address the
	// SDK picked (every instance's address is "sim-" and its name).
	Instances []string
	// Entry is the service transactions begin at.
	Entry string
	// CallTimeout bounds one Route (a call waiting for a decision); past it
	// the request fails. Default 30s.
	CallTimeout time.Duration
	// HeartbeatInterval and AllowedMisses of every client (SDK defaults
	// when zero).
	HeartbeatInterval time.Duration
	AllowedMisses     uint32
	// StartConcurrency is how many clients Start connects at once (default
	// 1: one after the other).
	StartConcurrency int
	// Configure, if set, adjusts each client's configuration before it is
	// created (dial options that observe the stream, for one).
	Configure func(inst string, cfg *sidecar.Config)
	// OnReady, if set, is called as each client is ready (registered and
	// holding its first routing table), from the goroutine that started it.
	OnReady func(inst string)
	// Choose, if set, picks which of svc's successors a sub-transaction
	// calls (each still once or twice); default all of them. A large mesh
	// calls a few, or a transaction's calls grow exponentially with depth.
	Choose func(svc string, next []string, rng *rand.Rand) []string
	// MaxCalls bounds the calls of one transaction (0: unbounded); past it
	// its sub-transactions call nothing more.
	MaxCalls int
	// Fail, if set, says whether a call that reached svc@version fails
	// there: it answers a server error (reported as the call's outcome)
	// without running its sub-transaction's calls; the caller goes on.
	Fail func(svc, version string, rng *rand.Rand) bool
	// OnServe, if set, is told of every sub-transaction as it runs: which
	// version of which service served the transaction (the versions the
	// services recorded serving, not the coordinator's decisions).
	OnServe func(txn, svc, version string)
	// LaneTag, if set, is asked at each transaction's entry for the lane
	// header and tag the request carries (DESIGN.md §4.9); ok false: none.
	// A transaction whose tag selects a lane runs in it; the oracle checks
	// that it never leaves the member map it entered with (LeftLane).
	LaneTag func(rng *rand.Rand) (header, tag string, ok bool)
}

// Sim is a set of simulated services and their load.
type Sim struct {
	cfg     Config
	clients map[string]*sidecar.Client // by instance name
	byAddr  map[string]*instance       // by address
	of      map[*sidecar.Client]*instance

	mu       sync.Mutex
	oracle   *Oracle           // txn -> svc -> version
	trace    map[string][]step // txn -> what it ran where, in order
	firstBad string            // the first violation and its transaction's trace
	began    time.Time
	outside  []time.Duration // Route latency of calls that did not wait
	decided  []time.Duration // Route latency of calls that waited for a decision

	requests, failed, bad, mixed atomic.Int64
	laneTxns, leftLane           atomic.Int64
	errored                      atomic.Int64 // calls Fail made fail
	longest                      atomic.Int64 // ns
	firstErr                     atomic.Value // error
}

// instance is one simulated instance: its client, service and version.
type instance struct {
	c            *sidecar.Client
	svc, version string
}

// Start connects one SDK client per instance and waits until each is ready.
func Start(ctx context.Context, cfg Config) (*Sim, error) {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	s := &Sim{cfg: cfg, clients: map[string]*sidecar.Client{}, byAddr: map[string]*instance{},
		of: map[*sidecar.Client]*instance{}, oracle: NewOracle(),
		trace: map[string][]step{}, began: time.Now()}
	for _, inst := range cfg.Instances {
		svc, rest, ok := strings.Cut(inst, "@")
		ver, _, _ := strings.Cut(rest, "#")
		if !ok || svc == "" || ver == "" {
			return nil, fmt.Errorf("loadsim: instance %q: want service@version", inst)
		}
		if s.clients[inst] != nil {
			return nil, fmt.Errorf("loadsim: instance %q named twice", inst)
		}
		scfg := sidecar.Config{Coordinators: cfg.Coordinators, InstanceID: inst, Service: svc,
			Version: ver, Address: "sim-" + inst, Dependencies: cfg.Graph[svc],
			HeartbeatInterval: cfg.HeartbeatInterval, AllowedMisses: cfg.AllowedMisses}
		if cfg.Configure != nil {
			cfg.Configure(inst, &scfg)
		}
		c, err := sidecar.New(scfg)
		if err != nil {
			return nil, err
		}
		s.clients[inst] = c
		in := &instance{c: c, svc: svc, version: ver}
		s.byAddr[scfg.Address], s.of[c] = in, in
	}
	var (
		wg       sync.WaitGroup
		errMu    sync.Mutex
		firstErr error
	)
	sem := make(chan struct{}, max(cfg.StartConcurrency, 1))
	for _, inst := range cfg.Instances {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := s.clients[inst].Start(ctx); err != nil {
				errMu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("loadsim: start %s: %w", inst, err)
				}
				errMu.Unlock()
				return
			}
			if cfg.OnReady != nil {
				cfg.OnReady(inst)
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = fmt.Errorf("loadsim: start: %w", ctx.Err())
	}
	if firstErr != nil {
		s.Close()
		return nil, firstErr
	}
	return s, nil
}

// Client returns the SDK client of "svc@version".
func (s *Sim) Client(inst string) *sidecar.Client { return s.clients[inst] }

// Close closes every client, at most 64 at once, within 5 s in all.
func (s *Sim) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range s.clients {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_ = c.Close(ctx)
		})
	}
	wg.Wait()
}

// step is one thing a transaction ran, kept to explain a violation (and
// formatted only then: the load generator shares the measured cores).
type step struct {
	at                     time.Duration // since the Sim started
	from, fromVer, to, ver string        // from is "" at the entry
	fromSub, sub           uint64
	took                   time.Duration // the Route
}

func (st step) String() string {
	at := st.at.Round(time.Microsecond)
	if st.from == "" {
		return fmt.Sprintf("+%v begin at %s@%s", at, st.to, st.ver)
	}
	return fmt.Sprintf("+%v %s@%s (sub %x) -> %s@%s (sub %x) in %v", at, st.from, st.fromVer, st.fromSub, st.to, st.ver, st.sub, st.took)
}

// record notes that txn ran at st.to@st.ver.
func (s *Sim) record(txn string, st step) {
	if s.cfg.OnServe != nil {
		s.cfg.OnServe(txn, st.to, st.ver)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.at = time.Since(s.began)
	s.trace[txn] = append(s.trace[txn], st)
	if v, bad := s.oracle.Ran(txn, st.to, st.ver); bad {
		if s.bad.Add(1) == 1 && s.firstBad == "" {
			s.firstBad = s.explainLocked(txn, fmt.Sprintf("ran on %s@%s and %s@%s", st.to, v, st.to, st.ver))
		}
	}
	if want, left := s.oracle.RanLane(txn, st.to, st.ver); left {
		if s.leftLane.Add(1) == 1 && s.firstBad == "" {
			s.firstBad = s.explainLocked(txn, fmt.Sprintf("left its lane: ran %s@%s, its lane has %s", st.to, st.ver, want))
		}
	}
	if other, mixed := s.oracle.RanSet(txn, st.to, st.ver); mixed {
		if s.mixed.Add(1) == 1 && s.firstBad == "" {
			s.firstBad = s.explainLocked(txn, fmt.Sprintf("ran a mixed set: %s and %s@%s", other, st.to, st.ver))
		}
	}
}

// explainLocked is a violation of txn with everything it ran, in order.
func (s *Sim) explainLocked(txn, what string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "transaction %s %s:", txn, what)
	for _, x := range s.trace[txn] {
		b.WriteString("\n  " + x.String())
	}
	return b.String()
}

// WatchSet makes the oracle check a set of services updated together
// (Oracle.WatchSet): MixedSets counts the transactions that ran some of it
// on the old versions and some on the new.
func (s *Sim) WatchSet(set Set) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.oracle.WatchSet(set)
}

// UnwatchSets stops checking the watched sets (Oracle.UnwatchSets).
func (s *Sim) UnwatchSets() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.oracle.UnwatchSets()
}

// FirstViolation describes the first transaction seen on two versions of
// a service, or running a watched set mixed, with everything it ran, in
// order; "" if none.
func (s *Sim) FirstViolation() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstBad
}

func (s *Sim) fail(err error) {
	s.failed.Add(1)
	s.firstErr.CompareAndSwap(nil, err)
}

// exec runs a sub-transaction at in: calls to its successors (each up to
// twice; those Choose picks) with work in between, within budget, while
// the transaction has calls left. It reports false when a call failed (the
// request fails).
func (s *Sim) exec(ctx context.Context, in *instance, budget time.Duration, rng *rand.Rand, calls *int) bool {
	c, svc, version := in.c, in.svc, in.version
	next := s.cfg.Graph[svc]
	if s.cfg.Choose != nil && len(next) > 0 {
		next = s.cfg.Choose(svc, next, rng)
	}
	for _, next := range next {
		for range 1 + rng.IntN(2) {
			if s.cfg.MaxCalls > 0 {
				if *calls >= s.cfg.MaxCalls {
					return true
				}
				*calls++
			}
			time.Sleep(time.Duration(rng.Int64N(int64(budget)/6 + 1)))
			rctx, cancel := context.WithTimeout(ctx, s.cfg.CallTimeout)
			start := time.Now()
			call, err := c.Route(rctx, next)
			took := time.Since(start) // the SDK's cost only
			cancel()
			if err != nil {
				s.fail(fmt.Errorf("route %s -> %s: %w", svc, next, err))
				return false
			}
			s.mu.Lock()
			if took > 50*time.Microsecond {
				s.decided = append(s.decided, took)
			} else {
				s.outside = append(s.outside, took)
			}
			s.mu.Unlock()
			t, _ := sidecar.FromContext(ctx)
			s.record(t.ID, step{from: svc, fromVer: version, fromSub: t.Sub, to: next, ver: call.Version, sub: call.Sub, took: took})
			nc := s.byAddr[call.Address]
			if nc == nil || nc.svc != next || nc.version != call.Version {
				call.Finish()
				s.fail(fmt.Errorf("loadsim: routed to %s@%s at %q, which does not exist", next, call.Version, call.Address))
				return false
			}
			if s.cfg.Fail != nil && s.cfg.Fail(nc.svc, nc.version, rng) {
				s.errored.Add(1)
				call.FinishWith(call.HTTPOutcome(500, nil))
				continue
			}
			jctx := nc.c.Join(ctx, t.ID, call.Sub)
			if name, _ := t.Lane(); name != "" {
				// The lane travels in-band, as between real services: the
				// callee reads it from the mesh headers.
				h := map[string]string{}
				call.SetHeaders(func(k, v string) { h[k] = v })
				var joined bool
				if jctx, joined = nc.c.JoinFrom(ctx, func(k string) string { return h[k] }); !joined {
					call.Finish()
					s.fail(fmt.Errorf("loadsim: %s could not join from the headers %v", next, h))
					return false
				}
			}
			ok := s.exec(jctx, nc, budget/2, rng, calls)
			call.FinishWith(call.HTTPOutcome(200, nil))
			if !ok {
				return false
			}
		}
	}
	return true
}

// Txn runs one transaction at the entry (v1 of the entry service), of
// about budget.
func (s *Sim) Txn(ctx context.Context, budget time.Duration, rng *rand.Rand) {
	s.TxnAt(ctx, s.cfg.Entry+"@v1", budget, rng)
}

// TxnAt runs one transaction of about budget that begins at instance inst.
// It reports whether every call succeeded.
func (s *Sim) TxnAt(ctx context.Context, inst string, budget time.Duration, rng *rand.Rand) bool {
	s.requests.Add(1)
	start := time.Now()
	entry := s.clients[inst]
	if entry == nil {
		s.fail(fmt.Errorf("loadsim: no instance %s", inst))
		return false
	}
	in := s.of[entry]
	var (
		tctx context.Context
		t    sidecar.Txn
	)
	if hdr, tag, ok := s.laneTag(rng); ok {
		tctx, t = entry.BeginFrom(ctx, func(h string) string {
			if h == hdr {
				return tag
			}
			return ""
		})
	} else {
		tctx, t = entry.Begin(ctx)
	}
	if name, members := t.Lane(); name != "" {
		s.laneTxns.Add(1)
		s.mu.Lock()
		s.oracle.EnterLane(t.ID, members)
		s.mu.Unlock()
	}
	s.record(t.ID, step{to: in.svc, ver: in.version})
	calls := 0
	ok := s.exec(tctx, in, budget, rng, &calls)
	if err := entry.End(tctx); err != nil {
		s.fail(fmt.Errorf("end: %w", err))
		ok = false
	}
	if d := int64(time.Since(start)); d > s.longest.Load() {
		s.longest.Store(d)
	}
	s.forget(t.ID)
	return ok
}

// laneTag is Config.LaneTag's answer, none without it.
func (s *Sim) laneTag(rng *rand.Rand) (header, tag string, ok bool) {
	if s.cfg.LaneTag == nil {
		return "", "", false
	}
	return s.cfg.LaneTag(rng)
}

// forget drops what the oracle kept of a finished transaction: it runs
// nothing more, so nothing more can be checked against it.
func (s *Sim) forget(txn string) {
	s.mu.Lock()
	s.oracle.Forget(txn)
	delete(s.trace, txn)
	s.mu.Unlock()
}

// Drive runs txn back to back on each of workers goroutines, in all at
// most perSecond a second (0: no bound), until the returned stop is called;
// stop lets the running ones finish and waits for them. Each worker has
// its own rng. The load is closed: its rate is what the system sustains,
// up to the bound.
func (s *Sim) Drive(ctx context.Context, workers, perSecond int, txn func(ctx context.Context, rng *rand.Rand)) (stop func()) {
	wctx, cancel := context.WithCancel(ctx)
	lim := rate.NewLimiter(rate.Inf, 1)
	if perSecond > 0 {
		lim = rate.NewLimiter(rate.Limit(perSecond), max(1, perSecond/100))
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			for lim.Wait(wctx) == nil {
				txn(ctx, rng)
			}
		})
	}
	var once sync.Once
	return func() { once.Do(func() { cancel(); wg.Wait() }) }
}

// Load runs rate transactions per second of 1 to maxMS ms until the
// returned stop is called; stop waits for the running ones.
func (s *Sim) Load(ctx context.Context, rate, maxMS int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for n := uint64(0); ; n++ {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(n, 7))
				s.Txn(ctx, time.Duration(1+rng.IntN(maxMS))*time.Millisecond, rng)
			}()
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// Requests, Failed and Violations count transactions run, transactions
// with a failed call, and (transaction, service) pairs seen on a second
// version.
func (s *Sim) Requests() int64   { return s.requests.Load() }
func (s *Sim) Failed() int64     { return s.failed.Load() }
func (s *Sim) Violations() int64 { return s.bad.Load() }

// Errored counts the calls Config.Fail made fail.
func (s *Sim) Errored() int64 { return s.errored.Load() }

// LaneTxns counts the transactions that entered a lane; LeftLane those
// that ran a member of their lane on another version than the member map
// they entered with.
func (s *Sim) LaneTxns() int64 { return s.laneTxns.Load() }
func (s *Sim) LeftLane() int64 { return s.leftLane.Load() }

// MixedSets counts the transactions that ran a watched set mixed.
func (s *Sim) MixedSets() int64 { return s.mixed.Load() }

// FirstError is the first failure seen, nil if none.
func (s *Sim) FirstError() error {
	err, _ := s.firstErr.Load().(error)
	return err
}

// Longest is the longest transaction so far.
func (s *Sim) Longest() time.Duration { return time.Duration(s.longest.Load()) }

// Latencies returns (and with reset clears) the Route latencies of calls
// that did not wait and of calls decided by the coordinator.
func (s *Sim) Latencies(reset bool) (outside, decided []time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	outside, decided = append([]time.Duration(nil), s.outside...), append([]time.Duration(nil), s.decided...)
	if reset {
		s.outside, s.decided = nil, nil
	}
	return outside, decided
}
