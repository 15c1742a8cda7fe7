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

	"github.com/coordinator/coordinator/sidecar"
)

// Graph is the static call graph: service -> services it calls.
type Graph map[string][]string

// Config configures a Sim.
type Config struct {
	// Coordinators are the replicas' gRPC addresses.
	Coordinators []string
	Graph        Graph
	// Instances are "service@version", one SDK client each.
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
}

// Sim is a set of simulated services and their load.
type Sim struct {
	cfg     Config
	clients map[string]*sidecar.Client // "svc@version"

	mu       sync.Mutex
	ran      map[string]map[string]string // txn -> svc -> version
	trace    map[string][]step            // txn -> what it ran where, in order
	firstBad string                       // the first violation and its transaction's trace
	began    time.Time
	outside  []time.Duration // Route latency of calls that did not wait
	decided  []time.Duration // Route latency of calls that waited for a decision

	requests, failed, bad atomic.Int64
	longest               atomic.Int64 // ns
	firstErr              atomic.Value // error
}

// Start connects one SDK client per instance and waits until each is ready.
func Start(ctx context.Context, cfg Config) (*Sim, error) {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	s := &Sim{cfg: cfg, clients: map[string]*sidecar.Client{}, ran: map[string]map[string]string{},
		trace: map[string][]step{}, began: time.Now()}
	for _, inst := range cfg.Instances {
		svc, ver, ok := strings.Cut(inst, "@")
		if !ok {
			s.Close()
			return nil, fmt.Errorf("loadsim: instance %q: want service@version", inst)
		}
		c, err := sidecar.New(sidecar.Config{Coordinators: cfg.Coordinators, InstanceID: inst, Service: svc,
			Version: ver, Address: "sim-" + inst, Dependencies: cfg.Graph[svc],
			HeartbeatInterval: cfg.HeartbeatInterval, AllowedMisses: cfg.AllowedMisses})
		if err != nil {
			s.Close()
			return nil, err
		}
		if err := c.Start(ctx); err != nil {
			s.Close()
			return nil, fmt.Errorf("loadsim: start %s: %w", inst, err)
		}
		s.clients[inst] = c
	}
	return s, nil
}

// Client returns the SDK client of "svc@version".
func (s *Sim) Client(inst string) *sidecar.Client { return s.clients[inst] }

// Close closes every client.
func (s *Sim) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, c := range s.clients {
		_ = c.Close(ctx)
	}
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
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.ran[txn]
	if m == nil {
		m = map[string]string{}
		s.ran[txn] = m
	}
	st.at = time.Since(s.began)
	s.trace[txn] = append(s.trace[txn], st)
	if v, ok := m[st.to]; ok && v != st.ver {
		if s.bad.Add(1) == 1 {
			var b strings.Builder
			fmt.Fprintf(&b, "transaction %s ran on %s@%s and %s@%s:", txn, st.to, v, st.to, st.ver)
			for _, x := range s.trace[txn] {
				b.WriteString("\n  " + x.String())
			}
			s.firstBad = b.String()
		}
	}
	m[st.to] = st.ver
}

// FirstViolation describes the first transaction seen on two versions of
// a service, with everything it ran, in order; "" if none.
func (s *Sim) FirstViolation() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.firstBad
}

func (s *Sim) fail(err error) {
	s.failed.Add(1)
	s.firstErr.CompareAndSwap(nil, err)
}

// exec runs a sub-transaction at svc@version: calls to its successors (each
// up to twice) with work in between, within budget. It reports false when
// a call failed (the request fails).
func (s *Sim) exec(ctx context.Context, svc, version string, budget time.Duration, rng *rand.Rand) bool {
	c := s.clients[svc+"@"+version]
	if c == nil {
		s.fail(fmt.Errorf("loadsim: no instance of %s@%s", svc, version))
		return false
	}
	for _, next := range s.cfg.Graph[svc] {
		for range 1 + rng.IntN(2) {
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
			nc := s.clients[next+"@"+call.Version]
			if nc == nil {
				call.Finish()
				s.fail(fmt.Errorf("loadsim: routed to %s@%s, which does not exist", next, call.Version))
				return false
			}
			ok := s.exec(nc.Join(ctx, t.ID, call.Sub), next, call.Version, budget/2, rng)
			call.Finish()
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
	s.requests.Add(1)
	start := time.Now()
	entry := s.clients[s.cfg.Entry+"@v1"]
	tctx, t := entry.Begin(ctx)
	s.record(t.ID, step{to: s.cfg.Entry, ver: "v1"})
	s.exec(tctx, s.cfg.Entry, "v1", budget, rng)
	if err := entry.End(tctx); err != nil {
		s.fail(fmt.Errorf("end: %w", err))
	}
	if d := int64(time.Since(start)); d > s.longest.Load() {
		s.longest.Store(d)
	}
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
