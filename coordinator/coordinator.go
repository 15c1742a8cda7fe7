package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coordinator/coordinator/coordinator/graph"
	"github.com/coordinator/coordinator/internal/ratelog"
	"github.com/coordinator/coordinator/security/identity"
	"github.com/coordinator/coordinator/storage"
)

// Defaults for Config fields left zero.
const (
	DefaultFlushInterval     = 5 * time.Millisecond
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultAllowedMisses     = 2
	DefaultMaxLiveTxns       = 2_000_000
	DefaultImplicitTimeout   = 30 * time.Second
	DefaultBeginWaitTimeout  = 2 * time.Second
	DefaultRegisterTimeout   = 10 * time.Second
	// DefaultPrepareTimeout bounds PREPARING when the update does not say:
	// far above the few routing round trips it takes, well below the
	// time an operator would wait without looking.
	DefaultPrepareTimeout = 2 * time.Minute
	// DefaultUpdateTimeout bounds WAITING (WF, BF) when the update sets no
	// timeout: long enough for a busy service to become free, short enough
	// that an update nobody watches does not wait forever.
	DefaultUpdateTimeout = time.Hour
	// DefaultMinSessionTTL is three times the default leader TTL: a new
	// leader is serving before a live sidecar's session can expire.
	DefaultMinSessionTTL = 6 * time.Second

	// streamDrainTimeout bounds how long Stop waits for sidecar streams to
	// end before it flushes.
	streamDrainTimeout = 3 * time.Second
)

// Config configures a Coordinator.
type Config struct {
	// Store holds the coordinator's durable state (storage.NewEtcd on
	// etcd, fenced by the leader's election key; storage/memstore in
	// component tests). Required. Its key prefix is the coordinator's.
	Store storage.Store
	// Prefix is filled from Store.Keys() by New (storage.DefaultPrefix
	// when the store's is empty); informational.
	Prefix string
	Logger *slog.Logger
	// Registerer receives the coordinator's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// FlushInterval is the write-behind period for transaction records.
	FlushInterval time.Duration
	// Heartbeat defaults for sidecars that do not say.
	DefaultHeartbeat time.Duration
	DefaultMisses    uint32
	// MaxLiveTxns bounds the live transactions in all: a BEGIN, or a CALL
	// that would start a transaction, past it is refused (ErrQuota);
	// /health reports over capacity at 90 % of it.
	MaxLiveTxns int
	// Quotas per session (quota.go; zero means the Default...): live
	// transactions it owns, services and versions it may introduce by
	// naming them in CALLs, static edges it may teach by undeclared calls
	// (and MaxLearnedEdges in all), and its events' token bucket.
	MaxLiveTxnsPerSession     int
	MaxNewServicesPerSession  int
	MaxNewVersionsPerSession  int
	MaxLearnedEdgesPerSession int
	MaxLearnedEdges           int
	MaxEventsPerSecond        float64
	EventBurst                int
	// MaxRejectedPerSecond and RejectedBurst: each session's budget of
	// events the engine rejects (rejectbudget.go; DefaultRejectedPerSecond,
	// DefaultRejectedBurst).
	MaxRejectedPerSecond float64
	RejectedBurst        int
	// MaxSessions and MaxSessionsPerPeer bound the sessions known at once
	// (connected, or waiting for their lease to expire), in all and per
	// peer (workload identity, or address); a Register past them is
	// refused with ErrQuota (DefaultMaxSessions, DefaultMaxSessionsPerPeer).
	MaxSessions        int
	MaxSessionsPerPeer int
	// OverRateCloseAfter closes the stream of a session that has stayed
	// over its event rate this long (ratehold.go; DefaultOverRateCloseAfter).
	OverRateCloseAfter time.Duration
	// ratePauseMax bounds one pause of a stream over its event rate
	// (maxRatePause; tests shorten or lengthen it).
	ratePauseMax time.Duration
	// ImplicitTimeout ends a transaction known only from downstream calls
	// whose Begin never arrived (its entry's events were lost, or arrived
	// after its End had been forgotten).
	ImplicitTimeout time.Duration
	// BeginWaitTimeout bounds how long a CALL of a transaction whose BEGIN
	// has not arrived is held during a switched update, waiting for it
	// (DefaultBeginWaitTimeout). The BEGIN of a transaction the mesh began
	// is at most a flush or a reconnect behind; one that has not come by
	// then will not (the caller joined a transaction nobody began), and the
	// call is decided as for a transaction not seen begin.
	BeginWaitTimeout time.Duration
	// RegisterTimeout ends a sidecar stream that has not sent its Register
	// this long after it opened (DefaultRegisterTimeout): an idle stream
	// holds memory and a descriptor for nothing.
	RegisterTimeout time.Duration
	// PrepareTimeout aborts an update still PREPARING after it (when the
	// update sets no prepare_timeout), naming the sessions that did not
	// acknowledge update mode (DefaultPrepareTimeout).
	PrepareTimeout time.Duration
	// UpdateTimeout is the timeout of a WF or BF update that sets none
	// (DefaultUpdateTimeout).
	UpdateTimeout time.Duration
	// MinSessionTTL is the shortest lease a sidecar session gets, whatever
	// its heartbeat settings: longer than a leader failover takes, so
	// that the sessions of live sidecars outlive the time without a leader
	// to heartbeat to (DefaultMinSessionTTL).
	MinSessionTTL time.Duration
	// OnFenced is called once, from its own goroutine, when a write failed
	// the store's fence (storage.ErrFenced: the leader's election key is no
	// longer this replica's, DESIGN.md §6): the coordinator has stopped
	// acting and should be stopped.
	OnFenced func()
	// Self-preservation (DESIGN.md §7): when the leases of at least
	// SelfPreservationRatio of the sessions, and of at least
	// SelfPreservationMin of them, expire within SelfPreservationWindow, the
	// expired sessions' transactions are kept (as legacy) and every switch
	// is paused until they register again, or until SelfPreservationGrace
	// after its expiry drops each. Zero (or a ratio outside (0, 1]) means
	// the default: 60 s, 0.8, 3, and twice the window.
	SelfPreservationWindow time.Duration
	SelfPreservationRatio  float64
	SelfPreservationMin    int
	SelfPreservationGrace  time.Duration
	// Forgetting (forget.go): services and versions unused for ForgetAfter
	// are removed (DefaultForgetAfter; negative: never); of the finished
	// updates, the UpdateRetention newest per service are kept, none
	// finished more than UpdateMaxAge ago (DefaultUpdateRetention,
	// DefaultUpdateMaxAge).
	ForgetAfter     time.Duration
	UpdateRetention int
	UpdateMaxAge    time.Duration
	// IdentityPolicy says which services a workload identity may register
	// as, when a stream carries one (identity.FromContext: the replica
	// verified the sidecar's client certificate); nil is the default
	// mapping (identity.DefaultService). A stream without an identity (no
	// client certificates configured) is not checked.
	IdentityPolicy *identity.Policy
	// MaxLanes bounds the lanes (DESIGN.md §4.9; DefaultMaxLanes): one
	// more is refused with ErrTooManyLanes.
	MaxLanes int
}

func (c *Config) setDefaults() {
	c.Prefix = c.Store.Keys().Root()
	if c.MaxLanes <= 0 {
		c.MaxLanes = DefaultMaxLanes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.DefaultHeartbeat <= 0 {
		c.DefaultHeartbeat = DefaultHeartbeatInterval
	}
	if c.DefaultMisses == 0 {
		c.DefaultMisses = DefaultAllowedMisses
	}
	if c.MaxLiveTxns <= 0 {
		c.MaxLiveTxns = DefaultMaxLiveTxns
	}
	if c.MinSessionTTL <= 0 {
		c.MinSessionTTL = DefaultMinSessionTTL
	}
	if c.UpdateTimeout <= 0 {
		c.UpdateTimeout = DefaultUpdateTimeout
	}
	if c.PrepareTimeout <= 0 {
		c.PrepareTimeout = DefaultPrepareTimeout
	}
	if c.ImplicitTimeout <= 0 {
		c.ImplicitTimeout = DefaultImplicitTimeout
	}
	if c.BeginWaitTimeout <= 0 {
		c.BeginWaitTimeout = DefaultBeginWaitTimeout
	}
	c.RegisterTimeout = c.RegisterTimeoutOrDefault()
	c.setQuotaDefaults()
	c.setSelfPreservationDefaults()
	c.setForgetDefaults()
}

// RegisterTimeoutOrDefault is RegisterTimeout, or its default when unset.
func (c Config) RegisterTimeoutOrDefault() time.Duration {
	if c.RegisterTimeout <= 0 {
		return DefaultRegisterTimeout
	}
	return c.RegisterTimeout
}

// Coordinator is the live state of one coordinator replica.
type Coordinator struct {
	cfg    Config
	lg     *slog.Logger
	store  storage.Store
	keys   storage.Keys
	leases *storage.Leases
	wb     *storage.WriteBehind
	watch  storage.SessionWatch // set by Start

	// progressWake ends the progress check's sleep: an update became
	// active, or a phase change was stored (everyWhile).
	progressWake wakeup
	progressRuns atomic.Uint64 // runs of the progress check (tests watch it sleep)
	metrics      *metrics

	// stateMemo shares WatchState's copies among its watchers
	// (admin_state.go).
	stateMemo stateMemo

	// regLocks serializes the registrations of one instance, and the
	// service record updates of one service: each does etcd I/O outside mu.
	regLocks keyLocks

	// mu is the event lock: it guards the engine and the fields below
	// unless said otherwise, and every change to the components' state is
	// made under it. doc.go says who owns what and the lock order.
	mu  sync.Mutex
	eng *graph.Engine
	// The components below keep their own state (and lock: see each);
	// changes to it are made under mu too.
	sess     *sessionTable        // sessions and owner slots (sessiontable.go)
	cat      *catalog             // service records, static edges, routes (catalog.go)
	routing  *routingPublisher    // routing revisions, snapshots and deltas (routing.go)
	implicit map[string]time.Time // transactions created by a Call, awaiting their Begin (a Begin deletes its own; sweepImplicit the rest)
	applyq   chan applyReq        // batches handed to the applier, unbuffered (applier.go)
	orch     *orchestrator        // updates, held calls, pins (orchestrator.go)
	lanes    *laneTable           // lanes by name (lanes.go)

	// Write-behind age gate: changes are stamped with the flush interval
	// they happen in (epoch), and collect takes only those at least one
	// interval old, so a transaction shorter than the interval is never
	// written. flushAll (Flush, Stop) takes everything.
	t0       time.Time
	flushAll atomic.Int32

	ctx        context.Context // cancelled by Stop: ends every stream
	cancel     context.CancelFunc
	streams    sync.WaitGroup
	stopping   atomic.Bool
	stopMu     sync.Mutex // orders connect's streams.Add before Stop's Wait
	started    atomic.Bool
	fencedFlag atomic.Bool // a write failed its fence: act no more

	sp  selfPreservation // DESIGN.md §7; guarded by mu
	fg  forgetState      // forget.go; guarded by mu
	adm admission        // quota.go: sessions' quotas; their usage guarded by mu
}

// New returns a coordinator; Start loads its state from etcd.
func New(cfg Config) (*Coordinator, error) {
	if cfg.Store == nil {
		return nil, errors.New("coordinator: Config.Store is required")
	}
	cfg.setDefaults()
	c := &Coordinator{
		cfg: cfg,
		// Sidecars can make the coordinator log (registrations, learned
		// edges, transactions whose Begin never came): bounded per kind.
		lg:       slog.New(ratelog.New(cfg.Logger.Handler(), ratelog.DefaultPerSecond, ratelog.DefaultBurst)),
		store:    cfg.Store,
		keys:     cfg.Store.Keys(),
		sess:     newSessionTable(),
		cat:      newCatalog(),
		implicit: make(map[string]time.Time),
		applyq:   make(chan applyReq),
		t0:       time.Now(),
	}
	c.eng = graph.New(graph.WithOnDirty(c.wakeFlusher))
	c.lanes = newLaneTable()
	c.routing = newRoutingPublisher(c.cat, c.sess)
	c.routing.lanes = c.lanes.list
	c.orch = &orchestrator{
		cfg: &c.cfg, lg: c.lg, keys: c.keys, ev: c,
		eng: c.eng, sess: c.sess, cat: c.cat, routing: c.routing,
		upd: newUpdateTable(), phases: newPhaseWriter(), pins: newPinCommitter(c),
		pendingPins: make(map[string]*storage.Op), analyses: newAnalysisStore(),
		laneKick: c.lanes.wake,
	}
	c.progressWake = newWakeup()
	c.orch.upd.woke, c.orch.phases.woke = c.progressWake, c.progressWake
	c.sp.store.kick = make(chan struct{}, 1)
	c.sp.cfg, c.sp.lg, c.sp.eng, c.sp.sess, c.sp.orch, c.sp.side = &c.cfg, c.lg, c.eng, c.sess, c.orch, c
	c.fg = forgetState{cfg: &c.cfg, lg: c.lg, eng: c.eng, cat: c.cat, upd: c.orch.upd, routing: c.routing,
		users: c.users(), side: c,
		idleSvc: make(map[string]time.Time), idleVer: make(map[string]time.Time), registering: make(map[string]int)}
	c.adm = admission{cfg: &c.cfg, lg: c.lg}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.leases = storage.NewLeases(c.store, c.lg)
	c.wb = storage.NewWriteBehind(c.store, storage.WriteBehindConfig{
		Interval:        cfg.FlushInterval,
		Collect:         c.collect,
		OnLeaseNotFound: c.onLeaseNotFound,
		OnFenced:        c.lostLeadership,
		Logger:          c.lg,
		Idle:            c.flushIdle,
	})
	m, err := newMetrics(c, cfg.Registerer)
	if err != nil {
		return nil, err
	}
	c.metrics = m
	c.orch.metrics = m
	c.sp.metrics = m
	c.fg.metrics = m
	c.adm.metrics = m
	return c, nil
}

// Start restores services, routes, sessions and transaction records from
// etcd, then starts the watch on sessions and the write-behind.
func (c *Coordinator) Start(ctx context.Context) error {
	if err := c.restore(ctx); err != nil {
		return fmt.Errorf("coordinator: restore: %w", err)
	}
	w, err := c.store.WatchSessions(ctx, c.onSessionGone)
	if err != nil {
		return fmt.Errorf("coordinator: session watch: %w", err)
	}
	c.watch = w
	// A session whose lease expired after restore read it and before the
	// cache listed is in no event: it expires now.
	c.mu.Lock()
	for s := range c.sess.all() {
		id := s.rec.InstanceId
		if lease, ok := c.watch.Lease(id); !ok || lease != s.lease {
			c.sp.leaseExpiredLocked(s, time.Now())
		}
	}
	// The time without a leader must not count against the sidecars:
	// every session restored gets a fresh TTL to re-register in.
	for s := range c.sess.all() {
		c.leases.Heartbeat(s.lease)
	}
	c.mu.Unlock()
	c.wb.Start()
	// Each background owner runs as one goroutine that Stop waits for
	// (streams.Go counts it: no count to keep in step by hand).
	c.streams.Go(c.runApplier)
	c.streams.Go(c.runPhaseWriter)
	c.streams.Go(c.runLaneSettle)
	c.streams.Go(func() {
		c.tick(c.cfg.ImplicitTimeout/4, func(now time.Time) {
			c.sweepImplicit(now, nil) // ends transactions whose Begin never came
			c.mu.Lock()
			c.sweepDepartedLocked(now) // and those deregistered sessions kept
			c.unlockAndSend()
		})
	})
	c.streams.Go(c.broadcastRouting)
	c.streams.Go(func() { c.everyWhile(progressEvery, c.orch.progressTickLocked, c.progressBusyLocked, c.progressWake) })
	c.streams.Go(c.orch.pins.run)
	c.streams.Go(func() { c.every(selfPreservationTick, c.sp.selfPreservationTickAllLocked) })
	c.streams.Go(c.runSelfPreservationStore)
	c.streams.Go(c.runForget)
	c.streams.Go(c.runAnalysisStore)
	c.sp.kickSPStore() // what restore resumed, or found, is written
	c.started.Store(true)
	c.lg.Info("coordinator started", "prefix", c.cfg.Prefix, "services", c.eng.NumServices(),
		"sessions", c.sess.len(), "live_txns", c.eng.Live())
	return nil
}

// Stop ends every sidecar stream, waits until their last batches are
// applied, and flushes the write-behind so that nothing acknowledged is lost.
func (c *Coordinator) Stop(ctx context.Context) error {
	c.stopMu.Lock()
	first := c.stopping.CompareAndSwap(false, true)
	c.stopMu.Unlock()
	if !first {
		return nil
	}
	c.cancel()
	// A sidecar that stopped reading can keep its handler blocked in Send;
	// do not let it keep the acknowledged records from being flushed.
	drained := make(chan struct{})
	go func() { c.streams.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(streamDrainTimeout):
		c.lg.Warn("streams did not end in time; flushing anyway", "waited", streamDrainTimeout)
	case <-ctx.Done():
	}
	var err error
	if c.started.Load() {
		if c.fencedFlag.Load() {
			// No longer the leader: nothing more may be written from here.
			dead, cancel := context.WithCancel(ctx)
			cancel()
			_ = c.wb.Stop(dead)
			c.mu.Lock()
			unwritten := c.eng.DirtyLen() + c.wb.Stats().Pending
			c.mu.Unlock()
			if unwritten > 0 {
				// The next leader treats their transactions as legacy.
				err = fmt.Errorf("%w: %d transaction records unwritten", ErrFenced, unwritten)
			}
		} else {
			spErr := c.sp.flushSelfPreservation(ctx) // the next leader resumes the mode
			c.flushAll.Add(1)
			err = errors.Join(c.wb.Stop(ctx), spErr)
		}
		c.watch.Close()
	}
	c.leases.Close()
	c.lg.Info("coordinator stopped", "live_txns", c.Live(), "error", err)
	return err
}

// tick runs fn every period until the coordinator stops.
func (c *Coordinator) tick(period time.Duration, fn func(now time.Time)) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case now := <-t.C:
			fn(now)
		}
	}
}

// every runs fn under the lock every period until the coordinator stops,
// then sends what fn queued; the periodic work (timeouts, sweeps) goes
// through it.
func (c *Coordinator) every(period time.Duration, fn func(now time.Time)) {
	c.tick(period, func(now time.Time) {
		c.mu.Lock()
		fn(now)
		c.unlockAndSend()
	})
}

// everyWhile is every for periodic work that has nothing to do at times:
// after each run of fn, if busy (also called under the lock) says there is
// nothing left, the ticker stops until wake is signalled, so an idle
// coordinator does not wake every period. Whatever makes busy true must
// signal wake (under the lock or after it, never before the change).
func (c *Coordinator) everyWhile(period time.Duration, fn func(now time.Time), busy func() bool, wake wakeup) {
	t := time.NewTicker(period)
	defer t.Stop()
	ticking := true
	for {
		var tick <-chan time.Time // nil while idle
		if ticking {
			tick = t.C
		}
		var now time.Time
		select {
		case <-c.ctx.Done():
			return
		case now = <-tick:
		case <-wake:
			if !ticking {
				t.Reset(period)
				ticking = true
			}
			now = time.Now() // run fn now: what woke it may be due already
		}
		c.mu.Lock()
		fn(now)
		idle := !busy()
		c.progressRuns.Add(1)
		c.unlockAndSend()
		if idle && ticking {
			t.Stop()
			ticking = false
		}
	}
}

// progressBusyLocked says whether the progress check has work: an
// unfinished update (timeouts, draining) or a stored phase change to apply.
// Both signal progressWake when they appear (updateTable.activate, the
// phase writer).
func (c *Coordinator) progressBusyLocked() bool {
	return c.orch.upd.anyActive() || c.orch.phases.hasStored()
}

// implicitSweepChunk is how many entries of the implicit set the sweep
// looks at per hold of the event lock (about 0.1 ms of work): the set can
// hold every transaction a busy mesh created out of order in the last
// ImplicitTimeout/4 that has not begun yet, and one hold over all of it
// stalled every stream (700,000 entries, 180 ms, in bench/ingest).
const implicitSweepChunk = 512

// sweepImplicit ends the transactions created by a Call whose Begin has
// not come within ImplicitTimeout, and forgets those whose Begin came or
// that ended. It takes the event lock for implicitSweepChunk entries at a
// time: the map iteration goes on across the releases (entries deleted
// meanwhile are not produced, entries added may be; each is read again
// under the lock). between, if not nil, runs between two chunks with the
// lock released (tests observe the release through it).
func (c *Coordinator) sweepImplicit(now time.Time, between func()) {
	c.mu.Lock()
	n := 0
	for id := range c.implicit {
		if n++; n%implicitSweepChunk == 0 {
			c.unlockAndSend()
			if between != nil {
				between()
			}
			c.mu.Lock()
		}
		since, ok := c.implicit[id]
		if !ok {
			continue // deleted while the lock was released
		}
		implicit, live := c.eng.Implicit(id)
		switch {
		case !live || !implicit:
			delete(c.implicit, id) // ended, or its Begin arrived
		case now.Sub(since) >= c.cfg.ImplicitTimeout:
			delete(c.implicit, id)
			if c.eng.End(id) == nil {
				c.metrics.implicitExpired.Inc()
				c.lg.Warn("ended transaction whose Begin never arrived", "txn", id, "after", now.Sub(since))
			}
		}
	}
	c.unlockAndSend()
}

// wakeFlusher wakes the write-behind, which sleeps while nothing is
// dirty (flushIdle): the engine calls it when a transaction becomes dirty,
// the END of a transaction that pinned calls it for the pins' deletions.
func (c *Coordinator) wakeFlusher() {
	if c.wb != nil {
		c.wb.Wake()
	}
}

// flushIdle reports that collect has nothing now and will have nothing
// until wakeFlusher is called: no dirty transaction, no pin to delete.
func (c *Coordinator) flushIdle() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.eng.DirtyLen() == 0 && !c.orch.hasMootPins()
}

// Live returns the number of live transactions.
func (c *Coordinator) Live() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.eng.Live()
}

// Flush writes every pending transaction record now, young ones included.
func (c *Coordinator) Flush(ctx context.Context) error {
	c.flushAll.Add(1)
	defer c.flushAll.Add(-1)
	return c.wb.Flush(ctx)
}

// epoch is the number of flush intervals since start, plus one.
func (c *Coordinator) epoch() uint64 {
	return uint64(time.Since(c.t0)/c.cfg.FlushInterval) + 1
}

// WriteBehindStats exposes the write-behind counters (for /health and benchmarks).
func (c *Coordinator) WriteBehindStats() storage.WriteBehindStats { return c.wb.Stats() }

// Store returns the store the coordinator uses.
func (c *Coordinator) Store() storage.Store { return c.store }

// Keys returns the key layout the coordinator uses.
func (c *Coordinator) Keys() storage.Keys { return c.keys }
