package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestSessionTTL(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		misses   int
		want     time.Duration
	}{
		{30 * time.Second, 3, 120 * time.Second}, // ServiceCenter's example
		{time.Second, 2, 3 * time.Second},
		{500 * time.Millisecond, 2, 2 * time.Second}, // 1.5 s: raised to MinTTL
		{700 * time.Millisecond, 3, 3 * time.Second}, // 2.8 s: rounded up
		{time.Second, 0, 2 * time.Second},
		{time.Second, -5, 2 * time.Second},
		{0, 10, MinTTL},
		{-time.Second, 1, MinTTL},
		{time.Duration(1 << 62), 100, maxTTL}, // no overflow
	} {
		if got := SessionTTL(tc.interval, tc.misses); got != tc.want {
			t.Errorf("SessionTTL(%v, %d) = %v, want %v", tc.interval, tc.misses, got, tc.want)
		}
	}
}

// gatedLease is a leaseAPI whose KeepAliveOnce calls block until the test
// answers them, and which records how many run at once.
type gatedLease struct {
	leaseAPI // nil in unit tests; the real one in countingLease use
	answers  chan keepAliveAnswer

	calls, running, maxRunning, done atomic.Int32
}

type keepAliveAnswer struct {
	ttl int64
	err error
}

func newGatedLease() *gatedLease { return &gatedLease{answers: make(chan keepAliveAnswer)} }

func (g *gatedLease) KeepAliveOnce(ctx context.Context, id LeaseID) (time.Duration, error) {
	g.calls.Add(1)
	n := g.running.Add(1)
	defer g.running.Add(-1)
	defer g.done.Add(1)
	for {
		m := g.maxRunning.Load()
		if n <= m || g.maxRunning.CompareAndSwap(m, n) {
			break
		}
	}
	select {
	case a := <-g.answers:
		if a.err != nil {
			return 0, a.err
		}
		return time.Duration(a.ttl) * time.Second, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func TestHeartbeatOneInFlight(t *testing.T) {
	g := newGatedLease()
	l := newLeases(g, testLogger())
	const id = LeaseID(42)

	if r := l.Heartbeat(id); !r.Pending || r.Err != nil {
		t.Fatalf("first Heartbeat = %+v, want Pending", r)
	}
	eventually(t, 5*time.Second, "first keep-alive started", func() bool { return g.calls.Load() == 1 })

	// While it is in flight, heartbeats return at once and start nothing.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if r := l.Heartbeat(id); !r.Pending {
					t.Errorf("Heartbeat during first keep-alive = %+v, want Pending", r)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("%d KeepAliveOnce calls while one was in flight, want 1", n)
	}

	g.answers <- keepAliveAnswer{ttl: 7}
	eventually(t, 5*time.Second, "first result recorded", func() bool {
		r, inFlight := l.last(id)
		return !inFlight && r.TTL == 7*time.Second
	})

	r := l.Heartbeat(id) // reports the result, starts the second
	if r.Pending || r.Err != nil || r.TTL != 7*time.Second || r.At.IsZero() {
		t.Fatalf("Heartbeat after first result = %+v, want TTL 7s", r)
	}
	eventually(t, 5*time.Second, "second keep-alive started", func() bool { return g.calls.Load() == 2 })
	if r := l.Heartbeat(id); r.TTL != 7*time.Second || g.calls.Load() != 2 {
		t.Fatalf("Heartbeat during second = %+v (calls %d), want last result, no new call", r, g.calls.Load())
	}

	// A transient failure is reported and the next heartbeat tries again.
	g.answers <- keepAliveAnswer{err: rpctypes.ErrNoLeader}
	eventually(t, 5*time.Second, "failure recorded", func() bool {
		r, inFlight := l.last(id)
		return !inFlight && r.Err != nil
	})
	r = l.Heartbeat(id)
	if !errors.Is(r.Err, rpctypes.ErrNoLeader) || errors.Is(r.Err, ErrLeaseExpired) {
		t.Fatalf("Heartbeat after failure = %+v, want the no-leader error", r)
	}
	eventually(t, 5*time.Second, "third keep-alive started", func() bool { return g.calls.Load() == 3 })

	// Close cancels the one in flight and waits for it.
	l.Close()
	if g.done.Load() != g.calls.Load() {
		t.Fatalf("Close returned with %d of %d keep-alives running", g.calls.Load()-g.done.Load(), g.calls.Load())
	}
	if m := g.maxRunning.Load(); m != 1 {
		t.Fatalf("max keep-alives in flight = %d, want 1", m)
	}
	if r := l.Heartbeat(id); !errors.Is(r.Err, ErrClosed) {
		t.Fatalf("Heartbeat after Close = %+v, want ErrClosed", r)
	}
}

func TestHeartbeatLeaseNotFound(t *testing.T) {
	g := newGatedLease()
	l := newLeases(g, testLogger())
	defer l.Close()
	const id = LeaseID(7)

	l.Heartbeat(id)
	g.answers <- keepAliveAnswer{err: fmt.Errorf("%w: lease 7", ErrLeaseExpired)}
	eventually(t, 5*time.Second, "result recorded", func() bool {
		r, inFlight := l.last(id)
		return !inFlight && r.Err != nil
	})
	for range 3 {
		if r := l.Heartbeat(id); !errors.Is(r.Err, ErrLeaseExpired) {
			t.Fatalf("Heartbeat = %+v, want ErrLeaseExpired", r)
		}
	}
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("%d calls, want 1: an expired lease is not asked about again", n)
	}
	l.Forget(id)
	if l.Len() != 0 {
		t.Fatalf("Len after Forget = %d", l.Len())
	}
}

// countingLease wraps the real lease API and records concurrency.
type countingLease struct {
	leaseAPI
	calls, running, maxRunning atomic.Int32
}

func (c *countingLease) KeepAliveOnce(ctx context.Context, id LeaseID) (time.Duration, error) {
	c.calls.Add(1)
	n := c.running.Add(1)
	defer c.running.Add(-1)
	for {
		m := c.maxRunning.Load()
		if n <= m || c.maxRunning.CompareAndSwap(m, n) {
			break
		}
	}
	return c.leaseAPI.KeepAliveOnce(ctx, id)
}

func TestLeasesKeepAliveRealEtcd(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testCtx(t, 60*time.Second)
	api := &countingLease{leaseAPI: testStore(cli)}
	l := newLeases(api, testLogger())
	defer l.Close()

	id, err := l.Grant(ctx, time.Second) // raised to MinTTL
	if err != nil {
		t.Fatal(err)
	}
	if r := l.Heartbeat(id); r.Pending || r.TTL != MinTTL {
		t.Fatalf("Heartbeat after Grant = %+v, want the granted TTL %v", r, MinTTL)
	}
	if _, err := cli.Put(ctx, "session", "s", clientv3.WithLease(clientv3.LeaseID(id))); err != nil {
		t.Fatal(err)
	}

	// Heartbeat from 4 goroutines every 10 ms for 2.5 TTLs: the lease lives
	// and etcd never sees two keep-alives of it at once.
	granted := time.Now()
	stop := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				r := l.Heartbeat(id)
				if errors.Is(r.Err, ErrLeaseExpired) {
					t.Errorf("lease expired while heartbeating: %+v", r)
					return
				}
				time.Sleep(10 * time.Millisecond) // heartbeat period, not synchronization
			}
		})
	}
	wg.Wait()
	ttl, err := cli.TimeToLive(ctx, clientv3.LeaseID(id))
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("after %v of heartbeats TimeToLive = %+v, %v; want alive", time.Since(granted), ttl, err)
	}
	if resp, err := cli.Get(ctx, "session"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("session key lost: %v, %v", resp, err)
	}
	if m := api.maxRunning.Load(); m != 1 {
		t.Fatalf("max keep-alives in flight = %d, want 1", m)
	}
	t.Logf("%d keep-alives for %d heartbeat goroutines over 5 s", api.calls.Load(), 4)

	// Stop heartbeating: the lease expires, its key goes, and the next
	// heartbeats say so.
	stopped := time.Now()
	eventually(t, 15*time.Second, "lease expiry", func() bool {
		resp, err := cli.Get(ctx, "session")
		return err == nil && len(resp.Kvs) == 0
	})
	if took := time.Since(stopped); took < time.Second {
		t.Fatalf("lease gone %v after the last heartbeat, before its TTL", took)
	}
	l.Heartbeat(id)
	eventually(t, 10*time.Second, "Heartbeat reports expiry", func() bool {
		return errors.Is(l.Heartbeat(id).Err, ErrLeaseExpired)
	})
}

func TestLeasesRevoke(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testCtx(t, 30*time.Second)
	l := NewLeases(testStore(cli), testLogger())
	defer l.Close()

	id, err := l.Grant(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "k", "v", clientv3.WithLease(clientv3.LeaseID(id))); err != nil {
		t.Fatal(err)
	}
	if err := l.Revoke(ctx, id); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if resp, err := cli.Get(ctx, "k"); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("key survived its lease: %v, %v", resp, err)
	}
	if l.Len() != 0 {
		t.Fatalf("revoked lease still tracked")
	}
	if err := l.Revoke(ctx, id); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("second Revoke = %v, want ErrLeaseExpired", err)
	}
}

// Keep-alives never wait for each other (a slow etcd answers them all at
// once), and once a burst is over at most maxIdleKeepAliveWorkers
// goroutines stay, parked, to run the next ones without starting any.
func TestHeartbeatWorkers(t *testing.T) {
	g := newGatedLease()
	l := newLeases(g, testLogger())
	defer l.Close()
	const burst = 50
	for i := range burst {
		l.Heartbeat(LeaseID(i + 1))
	}
	eventually(t, 5*time.Second, "every keep-alive of the burst running", func() bool { return g.running.Load() == burst })
	for range burst {
		g.answers <- keepAliveAnswer{ttl: 7}
	}
	eventually(t, 5*time.Second, "workers parked", func() bool {
		return g.done.Load() == burst && l.idle.Load() == maxIdleKeepAliveWorkers
	})
	if n := l.started.Load(); n != burst {
		t.Fatalf("%d workers started for a burst of %d keep-alives, want one each", n, burst)
	}
	for i := range 100 {
		id := LeaseID(i%burst + 1)
		l.Heartbeat(id)
		g.answers <- keepAliveAnswer{ttl: 7}
		eventually(t, 5*time.Second, "keep-alive done", func() bool { _, inFlight := l.last(id); return !inFlight })
	}
	if n := l.started.Load(); n != burst {
		t.Fatalf("%d workers started after 100 keep-alives one at a time, want none more than the burst's %d", n, burst)
	}
	if n := l.idle.Load(); n > maxIdleKeepAliveWorkers {
		t.Fatalf("%d workers parked, want at most %d", n, maxIdleKeepAliveWorkers)
	}
}
