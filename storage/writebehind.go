package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Write-behind defaults.
const (
	DefaultFlushInterval = 5 * time.Millisecond
	// DefaultMaxOps is etcd's default --max-txn-ops.
	DefaultMaxOps = 128
	// DefaultTxnTimeout bounds one attempt of one transaction.
	DefaultTxnTimeout = 5 * time.Second

	minRetryBackoff = 10 * time.Millisecond
	maxRetryBackoff = time.Second
	// maxDeadLeases bounds the memory of leases already reported dead.
	maxDeadLeases = 16384
)

// Collect hands the write-behind at most max pending writes, removing them
// from the source. Their keys must be distinct: the source coalesces
// several writes of one key into the last one. An empty result means
// nothing is pending. Collect is called by one goroutine at a time and must
// not block on the WriteBehind.
type Collect func(max int) []Op

// WriteBehindConfig configures a WriteBehind.
type WriteBehindConfig struct {
	// Interval is the flush period; default DefaultFlushInterval.
	Interval time.Duration
	// MaxOps is the largest number of ops in one etcd transaction; default
	// DefaultMaxOps (etcd refuses more than its --max-txn-ops).
	MaxOps int
	// Collect is the source of writes; required.
	Collect Collect
	// OnFenced, if set, is called once, on the flushing goroutine, when a
	// transaction fails the store's fence (Store.Commit returns
	// ErrFenced): the write-behind then stops for good.
	OnFenced func()
	// OnLeaseNotFound is called, once per lease, when a put failed because
	// its lease is gone (the session expired). The ops on that lease are
	// dropped; the others are written. It runs on the flushing goroutine:
	// keep it short and do not call Flush or Stop from it.
	OnLeaseNotFound func(LeaseID)
	// Timeout bounds one attempt of one transaction; default
	// DefaultTxnTimeout.
	Timeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Idle, if set, reports that the source holds nothing to write now or
	// later (Collect would return nothing on any later tick until the
	// source changes). After a drain that leaves nothing unwritten and
	// finds Idle true, the flusher stops ticking and sleeps until Wake (or
	// Kick, Flush, Stop): an idle coordinator then costs no wake-up every
	// Interval. A source that sets Idle must call Wake whenever it goes
	// from idle to holding something (it may call it more often); Idle is
	// called on the flusher's goroutine, like Collect.
	Idle func() bool
}

// WriteBehindStats are counters for /health and metrics.
type WriteBehindStats struct {
	Txns     uint64 // transactions committed
	Ops      uint64 // ops committed
	Failures uint64 // transaction attempts that failed and were retried
	Dropped  uint64 // ops dropped: dead lease, or refused by etcd as invalid
	Pending  int    // ops collected, not committed yet (being retried)

	LastLatency time.Duration // of the last committed transaction
	AvgLatency  time.Duration // mean over committed transactions
	MaxLatency  time.Duration
	LastFlush   time.Time // when the last transaction committed
	LastError   error     // of the last failed attempt, nil once one succeeds
	Fenced      bool
}

// WriteBehind writes batches of ops to a Store asynchronously, each batch
// one Store.Commit (fenced by the store). One flusher
// goroutine wakes every Interval (or on Kick), takes up to MaxOps ops from
// Collect and commits them in one transaction, and goes on while Collect
// returns full batches. With an Idle source it sleeps while the source has
// nothing, until Wake.
//
// At most one transaction is in flight. This keeps per-key order without
// any help from the source (a later op for a key is collected only after
// the batch holding the earlier one committed) and it is fast enough: a
// transaction of 128 puts costs about one WAL fsync plus its apply, so on
// a 2-core machine with embedded etcd one in-flight batch commits ~46k
// ops/s, where 256 concurrent single puts reach ~10k/s; two or four
// batches in flight would add only 20–25% (BenchmarkWriteBehind,
// BenchmarkPuts).
//
// Failed attempts are retried with backoff, keeping the batch and its
// order; nothing collected is lost before Stop returns, except ops etcd
// refuses for good (a dead lease, see OnLeaseNotFound; an invalid op).
// A transaction refused as too large or with too many ops is split.
type WriteBehind struct {
	st  wbStore
	cfg WriteBehindConfig
	lg  *slog.Logger

	// sem is held by whoever drains (the flusher or Flush/Stop): one
	// transaction in flight, and carry and dead belong to its holder.
	sem   chan struct{}
	carry []Op // collected, not committed yet; committed first
	dead  map[LeaseID]struct{}

	kick      chan struct{}
	wake      chan struct{}
	stopc     chan struct{}
	stopOnce  sync.Once
	startOnce sync.Once
	started   atomic.Bool
	donec     chan struct{}
	loopCtx   context.Context
	cancel    context.CancelFunc
	fenced    atomic.Bool
	pending   atomic.Int64

	mu           sync.Mutex
	stats        WriteBehindStats
	totalLatency time.Duration
}

// wbStore is the part of Store that WriteBehind uses.
type wbStore interface {
	Commit(ctx context.Context, ops ...Op) error
	TimeToLive(ctx context.Context, id LeaseID) (time.Duration, error)
}

// NewWriteBehind returns a stopped WriteBehind writing to st; call Start.
// It panics if cfg.Collect is nil.
func NewWriteBehind(st Store, cfg WriteBehindConfig) *WriteBehind {
	return newWriteBehind(st, cfg)
}

func newWriteBehind(st wbStore, cfg WriteBehindConfig) *WriteBehind {
	if cfg.Collect == nil {
		panic("storage: WriteBehindConfig.Collect is nil")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultFlushInterval
	}
	if cfg.MaxOps <= 0 {
		cfg.MaxOps = DefaultMaxOps
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTxnTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &WriteBehind{
		st:      st,
		cfg:     cfg,
		lg:      cfg.Logger.With("component", "writebehind"),
		sem:     make(chan struct{}, 1),
		dead:    make(map[LeaseID]struct{}),
		kick:    make(chan struct{}, 1),
		wake:    make(chan struct{}, 1),
		stopc:   make(chan struct{}),
		donec:   make(chan struct{}),
		loopCtx: ctx,
		cancel:  cancel,
	}
}

// Start starts the flusher goroutine. Calls after the first, or after
// Stop, do nothing.
func (w *WriteBehind) Start() {
	w.startOnce.Do(func() {
		select {
		case <-w.stopc:
			return
		default:
		}
		w.started.Store(true)
		go w.loop()
	})
}

// Kick asks for a flush now rather than at the next tick (e.g. when the
// source holds MaxOps ops or more). It never blocks.
func (w *WriteBehind) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Wake tells a flusher that sleeps because the source was idle (see
// WriteBehindConfig.Idle) that the source holds something again: it ticks
// every Interval again from now. It never blocks and is cheap enough to
// call under the source's lock.
func (w *WriteBehind) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Flush writes everything Collect has now, and whatever earlier attempts
// left unwritten, and returns when it is committed, when ctx is done (what
// is left is kept for the next flush) or when fenced (ErrFenced).
func (w *WriteBehind) Flush(ctx context.Context) error {
	return w.drain(ctx)
}

// Stop stops the flusher after its current batch, then flushes everything
// left (like Flush) with ctx. Nothing collected is lost unless ctx ends
// first (the error says so) or the writer was fenced.
func (w *WriteBehind) Stop(ctx context.Context) error {
	w.stopOnce.Do(func() { close(w.stopc) })
	if w.started.Load() {
		select {
		case <-w.donec:
		case <-ctx.Done():
			w.cancel()
			<-w.donec
		}
	}
	w.cancel()
	err := w.drain(ctx)
	if err != nil && !errors.Is(err, ErrFenced) {
		err = fmt.Errorf("storage: write-behind stopped with %d ops unwritten: %w", w.pending.Load(), err)
	}
	return err
}

// Err returns ErrFenced once a fence compare failed, nil before.
func (w *WriteBehind) Err() error {
	if w.fenced.Load() {
		return ErrFenced
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (w *WriteBehind) Stats() WriteBehindStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats
	s.Pending = int(w.pending.Load())
	s.Fenced = w.fenced.Load()
	return s
}

func (w *WriteBehind) loop() {
	defer close(w.donec)
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	ticking := true
	for {
		var tick <-chan time.Time // nil while the source is idle
		if ticking {
			tick = t.C
		}
		select {
		case <-w.stopc:
			return
		case <-tick:
		case <-w.kick:
		case <-w.wake:
			// New work: what Collect takes must age an Interval first,
			// so the first drain is at the next tick.
			if !ticking {
				t.Reset(w.cfg.Interval)
				ticking = true
			}
			continue
		}
		if err := w.drain(w.loopCtx); errors.Is(err, ErrFenced) {
			return
		}
		// Sleep once nothing is left, here or at the source. A Wake sent
		// at any time since the last one was taken is still in w.wake
		// and ends the sleep at once (at worst a few needless ticks).
		if ticking && w.cfg.Idle != nil && w.pending.Load() == 0 && w.cfg.Idle() {
			t.Stop()
			ticking = false
		}
	}
}

// errStopping interrupts the flusher's retries when Stop is called; the
// batch stays in carry for Stop's final flush.
var errStopping = errors.New("storage: write-behind stopping")

// drain commits carry, then collects and commits until Collect returns
// less than a full batch.
func (w *WriteBehind) drain(ctx context.Context) error {
	if ctx.Err() != nil { // do not take ops from the source only to keep them
		return context.Cause(ctx)
	}
	select {
	case w.sem <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	defer func() { <-w.sem }()

	for {
		if w.fenced.Load() {
			return ErrFenced
		}
		last := false
		if len(w.carry) == 0 {
			ops := w.cfg.Collect(w.cfg.MaxOps)
			if len(ops) == 0 {
				return nil
			}
			w.setCarry(ops)
			last = len(ops) < w.cfg.MaxOps
		}
		if err := w.commitCarry(ctx); err != nil {
			return err
		}
		if last {
			return nil
		}
	}
}

func (w *WriteBehind) setCarry(ops []Op) {
	w.carry = ops
	w.pending.Store(int64(len(ops)))
}

// commitCarry commits carry in transactions of at most MaxOps ops, in
// order, retrying transient failures.
func (w *WriteBehind) commitCarry(ctx context.Context) error {
	limit := w.cfg.MaxOps // lowered when etcd finds a batch too large
	backoff := minRetryBackoff
	for attempt := 1; len(w.carry) > 0; attempt++ {
		n := min(len(w.carry), limit)
		batch := w.carry[:n]
		err := w.txn(ctx, batch)
		switch {
		case err == nil:
			w.setCarry(w.carry[n:])
			backoff, attempt = minRetryBackoff, 0
			continue
		case errors.Is(err, ErrFenced):
			if w.fenced.CompareAndSwap(false, true) && w.cfg.OnFenced != nil {
				w.cfg.OnFenced()
			}
			w.lg.Warn("fence compare failed: leadership lost, write-behind stops", "ops_dropped", len(w.carry))
			w.addDropped(len(w.carry))
			w.setCarry(nil)
			return ErrFenced
		case errors.Is(err, ErrLeaseExpired):
			dropped, lerr := w.dropDeadLeases(ctx, batch)
			if lerr == nil && dropped > 0 {
				continue
			}
			if lerr != nil {
				err = fmt.Errorf("%w (finding dead leases: %w)", err, lerr)
			}
		case errors.Is(err, ErrRefused):
			// Too many ops, request too large, duplicate keys: retrying
			// the same batch cannot help.
			if n > 1 {
				limit = n / 2
				w.lg.Warn("transaction refused, splitting", "ops", n, "error", err)
				continue
			}
			w.lg.Error("op refused by the store, dropped", "key", batch[0].Key(), "error", err)
			w.addDropped(1)
			w.setCarry(w.carry[1:])
			continue
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		w.noteFailure(err, n, attempt)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-w.stopSignal(ctx):
			return errStopping
		}
		backoff = min(2*backoff, maxRetryBackoff)
	}
	return nil
}

// stopSignal interrupts the flusher's backoff on Stop; Flush and Stop's
// own drain are bounded by their ctx only.
func (w *WriteBehind) stopSignal(ctx context.Context) <-chan struct{} {
	if ctx == w.loopCtx {
		return w.stopc
	}
	return nil
}

func (w *WriteBehind) txn(ctx context.Context, ops []Op) error {
	tctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	start := time.Now()
	if err := w.st.Commit(tctx, ops...); err != nil {
		if errors.Is(err, ErrFenced) {
			return ErrFenced
		}
		return err
	}
	took := time.Since(start)

	w.mu.Lock()
	defer w.mu.Unlock()
	w.stats.Txns++
	w.stats.Ops += uint64(len(ops))
	w.stats.LastLatency = took
	w.stats.MaxLatency = max(w.stats.MaxLatency, took)
	w.totalLatency += took
	w.stats.AvgLatency = w.totalLatency / time.Duration(w.stats.Txns)
	w.stats.LastFlush = start.Add(took)
	w.stats.LastError = nil
	return nil
}

func (w *WriteBehind) noteFailure(err error, ops, attempt int) {
	w.mu.Lock()
	w.stats.Failures++
	w.stats.LastError = err
	w.mu.Unlock()
	// Warn on the first failure of a batch and then at powers of two.
	if attempt&(attempt-1) == 0 {
		w.lg.Warn("transaction failed, retrying", "ops", ops, "attempt", attempt, "error", err)
	}
}

func (w *WriteBehind) addDropped(n int) {
	w.mu.Lock()
	w.stats.Dropped += uint64(n)
	w.mu.Unlock()
}

// dropDeadLeases finds which leases of batch etcd no longer knows, reports
// each once to OnLeaseNotFound and removes every op on them from carry.
func (w *WriteBehind) dropDeadLeases(ctx context.Context, batch []Op) (int, error) {
	dead := make(map[LeaseID]bool)
	for _, op := range batch {
		id := op.Lease()
		if id == 0 {
			continue
		}
		if _, seen := dead[id]; seen {
			continue
		}
		if _, known := w.dead[id]; known {
			dead[id] = true
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
		ttl, err := w.st.TimeToLive(tctx, id)
		cancel()
		if err != nil && !errors.Is(err, ErrLeaseExpired) {
			return 0, err
		}
		dead[id] = err != nil || ttl <= 0
	}
	for id, isDead := range dead {
		if !isDead {
			continue
		}
		if _, known := w.dead[id]; known {
			continue
		}
		if len(w.dead) >= maxDeadLeases {
			clear(w.dead)
		}
		w.dead[id] = struct{}{}
		w.lg.Info("lease not found, dropping its writes", "lease", fmt.Sprintf("%016x", int64(id)))
		if w.cfg.OnLeaseNotFound != nil {
			w.cfg.OnLeaseNotFound(id)
		}
	}
	kept := w.carry[:0:0]
	for _, op := range w.carry {
		if id := op.Lease(); id == NoLease || !dead[id] {
			kept = append(kept, op)
		}
	}
	dropped := len(w.carry) - len(kept)
	w.addDropped(dropped)
	w.setCarry(kept)
	return dropped, nil
}
