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

// MinTTL is the shortest lease the coordinator asks for. etcd raises any
// shorter TTL to 1.5 election timeouts (1.5 s with its default timing,
// rounded up to 2 s), so asking for less would only hide the real TTL.
const MinTTL = 2 * time.Second

// maxTTL is etcd's largest lease TTL (lease.MaxLeaseTTL, 9e9 s), which is
// also about the largest time.Duration.
const maxTTL = time.Duration(9_000_000_000) * time.Second

const (
	// defaultKeepAliveTimeout bounds a keep-alive whose lease TTL is not
	// known yet. With a known TTL the bound is the TTL: past it the lease
	// is gone anyway.
	defaultKeepAliveTimeout = 10 * time.Second
	// maxIdleKeepAliveWorkers bounds the goroutines that stay parked
	// between keep-alives. A heartbeat hands its keep-alive to a parked
	// one rather than starting a goroutine (whose stack would grow again
	// through etcd's call path each time); when none is parked it starts
	// one, so a slow etcd never queues keep-alives behind each other.
	maxIdleKeepAliveWorkers = 8
)

// SessionTTL is the lease TTL of a session that heartbeats every interval
// and may miss misses heartbeats in a row: interval × (misses+1), at least
// MinTTL, rounded up to whole seconds (etcd's unit).
func SessionTTL(interval time.Duration, misses int) time.Duration {
	if interval < 0 {
		interval = 0
	}
	if misses < 0 {
		misses = 0
	}
	ttl := maxTTL
	if n := time.Duration(misses) + 1; interval == 0 || interval <= maxTTL/n {
		ttl = interval * n
	}
	ttl = max(ttl, MinTTL)
	if r := ttl % time.Second; r != 0 {
		ttl += time.Second - r
	}
	return min(ttl, maxTTL)
}

// leaseAPI is the part of Store that Leases uses; tests wrap it.
type leaseAPI interface {
	Grant(ctx context.Context, ttl time.Duration) (LeaseID, time.Duration, error)
	Revoke(ctx context.Context, id LeaseID) error
	KeepAliveOnce(ctx context.Context, id LeaseID) (time.Duration, error)
}

// HeartbeatResult is the outcome of the last keep-alive of a lease that
// completed, as Heartbeat reports it.
type HeartbeatResult struct {
	// TTL is the lease's TTL as etcd set it by that keep-alive (or grant).
	TTL time.Duration
	// Err is nil on success; it wraps ErrLeaseExpired when etcd no longer
	// knows the lease, and otherwise holds the transient cause (no leader,
	// timeout, ...), in which case the lease may well be alive.
	Err error
	// At is when that result arrived.
	At time.Time
	// Pending is true when no keep-alive or grant of this lease has
	// completed yet: TTL, Err and At are then zero.
	Pending bool
}

// Leases grants the sessions' leases and refreshes them asynchronously,
// the way ServiceCenter refreshes instance leases: a heartbeat never waits
// for etcd. For each lease at most one KeepAliveOnce is in flight; a
// heartbeat that arrives meanwhile is dropped and answered at once with the
// result of the last keep-alive that completed (a queue of length one).
// So a slow etcd delays what heartbeats report, never the heartbeats.
//
// Leases is safe for concurrent use.
type Leases struct {
	api leaseAPI
	lg  *slog.Logger
	now func() time.Time

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // keep-alive workers, busy or parked

	jobs    chan keepAliveJob // unbuffered: a send succeeds only to a parked worker
	idle    atomic.Int32      // workers parked on jobs (a soft count)
	started atomic.Int64      // workers started, for tests

	mu     sync.Mutex
	closed bool
	leases map[LeaseID]*leaseState
}

// keepAliveJob is one keep-alive for a worker to run.
type keepAliveJob struct {
	id      LeaseID
	st      *leaseState
	timeout time.Duration
}

type leaseState struct {
	inFlight bool
	last     HeartbeatResult
}

// NewLeases returns a Leases on st's leases. A nil lg means
// slog.Default().
func NewLeases(st Store, lg *slog.Logger) *Leases {
	return newLeases(st, lg)
}

func newLeases(api leaseAPI, lg *slog.Logger) *Leases {
	if lg == nil {
		lg = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Leases{
		api:    api,
		lg:     lg.With("component", "leases"),
		now:    time.Now,
		ctx:    ctx,
		cancel: cancel,
		leases: make(map[LeaseID]*leaseState),
		jobs:   make(chan keepAliveJob),
	}
}

// Grant creates a lease of at least ttl (MinTTL at least, whole seconds)
// and starts tracking it: its first Heartbeat reports the grant.
func (l *Leases) Grant(ctx context.Context, ttl time.Duration) (LeaseID, error) {
	id, got, err := l.api.Grant(ctx, max(ttl, MinTTL))
	if err != nil {
		return 0, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.leases[id] = &leaseState{last: HeartbeatResult{TTL: got, At: l.now()}}
	}
	return id, nil
}

// Heartbeat asks for lease id to be refreshed and returns at once, never
// waiting for etcd. If no keep-alive of id is in flight it starts one. It
// returns the last completed result (Pending if none yet). Once etcd has
// said the lease is gone, Heartbeat keeps returning that error (wrapping
// ErrLeaseExpired) without asking etcd again: a new session needs a new
// lease. After Close it returns ErrClosed.
func (l *Leases) Heartbeat(id LeaseID) HeartbeatResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return HeartbeatResult{Err: ErrClosed, At: l.now()}
	}
	st := l.leases[id]
	if st == nil {
		st = &leaseState{last: HeartbeatResult{Pending: true}}
		l.leases[id] = st
	}
	res := st.last
	if st.inFlight || errors.Is(res.Err, ErrLeaseExpired) {
		return res
	}
	st.inFlight = true
	timeout := defaultKeepAliveTimeout
	if res.TTL > 0 {
		timeout = res.TTL
	}
	job := keepAliveJob{id, st, timeout}
	select {
	case l.jobs <- job: // a parked worker runs it
	default:
		l.wg.Add(1)
		l.started.Add(1)
		go l.worker(job)
	}
	return res
}

// worker runs job, then waits for the next one while fewer than
// maxIdleKeepAliveWorkers others wait, until Close.
func (l *Leases) worker(job keepAliveJob) {
	defer l.wg.Done()
	for {
		l.keepAlive(job.id, job.st, job.timeout)
		if l.idle.Add(1) > maxIdleKeepAliveWorkers {
			l.idle.Add(-1)
			return
		}
		select {
		case job = <-l.jobs:
			l.idle.Add(-1)
		case <-l.ctx.Done():
			l.idle.Add(-1)
			return
		}
	}
}

func (l *Leases) keepAlive(id LeaseID, st *leaseState, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(l.ctx, timeout)
	ttl, err := l.api.KeepAliveOnce(ctx, id)
	cancel()

	res := HeartbeatResult{At: l.now()}
	if err == nil {
		res.TTL = ttl
	} else {
		res.Err = err // wraps ErrLeaseExpired when the lease is gone
	}

	l.mu.Lock()
	prev := st.last
	st.last, st.inFlight = res, false
	l.mu.Unlock()

	switch {
	case res.Err == nil:
	case errors.Is(res.Err, ErrLeaseExpired):
		l.lg.Info("lease expired", "lease", fmt.Sprintf("%016x", int64(id)))
	case prev.Err == nil && l.ctx.Err() == nil:
		// Log the first failure of a run only: heartbeats may be frequent.
		l.lg.Warn("keep-alive failed", "lease", fmt.Sprintf("%016x", int64(id)), "error", err)
	}
}

// Revoke revokes lease id, deleting its keys, and forgets it. A lease etcd
// no longer knows gives an error wrapping ErrLeaseExpired.
func (l *Leases) Revoke(ctx context.Context, id LeaseID) error {
	err := l.api.Revoke(ctx, id)
	if err != nil && !errors.Is(err, ErrLeaseExpired) {
		return err
	}
	l.Forget(id)
	return err
}

// Forget drops the bookkeeping of lease id (its last result) without
// touching etcd; an in-flight keep-alive finishes unobserved.
func (l *Leases) Forget(id LeaseID) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.leases, id)
}

// Len returns the number of leases tracked.
func (l *Leases) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.leases)
}

// Close cancels the keep-alives in flight and waits for them, and the
// parked workers, to return.
// Leases are not revoked: they expire unless another coordinator refreshes
// them. Later calls return ErrClosed.
func (l *Leases) Close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	l.wg.Wait()
}

// last returns the last result of id without starting a keep-alive.
func (l *Leases) last(id LeaseID) (HeartbeatResult, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st, ok := l.leases[id]
	if !ok {
		return HeartbeatResult{}, false
	}
	return st.last, st.inFlight
}
