package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// recorder collects a cache's events.
type recorder struct {
	mu  sync.Mutex
	evs []Event
}

func (r *recorder) add(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, e)
}

func (r *recorder) take() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.evs
	r.evs = nil
	return evs
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.evs)
}

// brief renders events as "PUT k=v (prev)" lines for comparison.
func brief(evs []Event) []string {
	var out []string
	for _, e := range evs {
		s := fmt.Sprintf("%v %s=%s", e.Type, e.Key, e.Value)
		if e.PrevValue != nil {
			s += fmt.Sprintf(" (was %s)", e.PrevValue)
		}
		out = append(out, s)
	}
	return out
}

func put(t *testing.T, cli *clientv3.Client, k, v string, opts ...clientv3.OpOption) int64 {
	t.Helper()
	resp, err := cli.Put(context.Background(), k, v, opts...)
	if err != nil {
		t.Fatalf("Put(%q): %v", k, err)
	}
	return resp.Header.Revision
}

func del(t *testing.T, cli *clientv3.Client, k string) int64 {
	t.Helper()
	resp, err := cli.Delete(context.Background(), k)
	if err != nil {
		t.Fatalf("Delete(%q): %v", k, err)
	}
	return resp.Header.Revision
}

func startCache(t *testing.T, cli *clientv3.Client, prefixes ...string) (*Cache, *recorder) {
	t.Helper()
	c := NewCache(cli, prefixes, testLogger())
	rec := &recorder{}
	c.OnEvent(rec.add)
	if err := c.Start(testCtx(t, 20*time.Second)); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(c.Close)
	return c, rec
}

func TestCacheInitialLoad(t *testing.T) {
	_, cli := startEtcd(t)
	k := Keys{}
	put(t, cli, k.Session("i2"), "s2")
	put(t, cli, k.Session("i1"), "s1")
	put(t, cli, k.Route("auth"), "v1")
	put(t, cli, k.Txn("t1"), "outside the cached prefixes")
	rev := put(t, cli, "/elsewhere", "x")

	c, rec := startCache(t, cli, k.Sessions(), k.Routes(), k.Sessions()+"i") // the last is covered
	want := []string{
		"PUT /coordinator/v1/routes/auth=v1",
		"PUT /coordinator/v1/sessions/i1=s1",
		"PUT /coordinator/v1/sessions/i2=s2",
	}
	if got := brief(rec.take()); !slices.Equal(got, want) {
		t.Fatalf("initial events:\n%q\nwant\n%q", got, want)
	}
	if c.Revision() < rev {
		t.Fatalf("Revision() = %d after loading at >= %d", c.Revision(), rev)
	}
	if e, ok := c.Get(k.Session("i1")); !ok || string(e.Value) != "s1" || e.Type != EventPut || e.Rev == 0 || e.CreateRev == 0 {
		t.Fatalf("Get(i1) = %+v, %v", e, ok)
	}
	if _, ok := c.Get(k.Txn("t1")); ok {
		t.Fatalf("Get of a key outside the prefixes found something")
	}
	if got := brief(c.List(k.Sessions())); !slices.Equal(got, want[1:]) {
		t.Fatalf("List(sessions) = %q", got)
	}
	if got := brief(c.List(k.Root())); !slices.Equal(got, want) {
		t.Fatalf("List(root) = %q", got)
	}
	if got := c.List(k.Session("i1")); len(got) != 1 {
		t.Fatalf("List(one key) = %v", got)
	}
	if c.Len() != 3 {
		t.Fatalf("Len() = %d", c.Len())
	}
}

func TestCacheEventsInOrder(t *testing.T) {
	_, cli := startEtcd(t)
	put(t, cli, "/a/1", "old")
	c, rec := startCache(t, cli, "/a/", "/c/")
	rec.take()

	put(t, cli, "/a/1", "new")
	put(t, cli, "/b/skipped", "between the prefixes")
	put(t, cli, "/c/1", "x")
	txn, err := cli.Txn(context.Background()).Then(
		clientv3.OpPut("/a/2", "y"), clientv3.OpDelete("/c/1"), clientv3.OpPut("/c/2", "z")).Commit()
	if err != nil {
		t.Fatal(err)
	}
	rev := del(t, cli, "/a/1")
	if err := c.WaitRevision(testCtx(t, 10*time.Second), rev); err != nil {
		t.Fatalf("WaitRevision(%d): %v", rev, err)
	}
	want := []string{
		"PUT /a/1=new (was old)",
		"PUT /c/1=x",
		"PUT /a/2=y",
		"DELETE /c/1= (was x)",
		"PUT /c/2=z",
		"DELETE /a/1= (was new)",
	}
	evs := rec.take()
	if got := brief(evs); !slices.Equal(got, want) {
		t.Fatalf("events:\n%q\nwant\n%q", got, want)
	}
	for _, e := range evs[2:5] {
		if e.Rev != txn.Header.Revision {
			t.Fatalf("%v: Rev %d, want the txn's %d", e, e.Rev, txn.Header.Revision)
		}
	}
	if got := brief(c.List("/")); !slices.Equal(got, []string{"PUT /a/2=y", "PUT /c/2=z"}) {
		t.Fatalf("List = %q", got)
	}
}

func TestCacheLeaseExpiryIsDelete(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testCtx(t, 30*time.Second)
	lease, err := cli.Grant(ctx, int64(MinTTL/time.Second))
	if err != nil {
		t.Fatal(err)
	}
	put(t, cli, "/s/inst", "alive", clientv3.WithLease(lease.ID))
	c, rec := startCache(t, cli, "/s/")
	if e, ok := c.Get("/s/inst"); !ok || e.Lease != lease.ID {
		t.Fatalf("Get = %+v, %v; want the key on lease %x", e, ok, lease.ID)
	}

	eventually(t, 15*time.Second, "Delete on lease expiry", func() bool { return rec.len() >= 2 })
	evs := rec.take()
	d := evs[1]
	if d.Type != EventDelete || d.Key != "/s/inst" || string(d.PrevValue) != "alive" || d.Lease != lease.ID {
		t.Fatalf("after expiry got %+v, want a Delete of /s/inst on lease %x", d, lease.ID)
	}
	if _, ok := c.Get("/s/inst"); ok {
		t.Fatalf("expired key still cached")
	}
}

func TestCacheRelistAfterCompaction(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testCtx(t, 30*time.Second)
	put(t, cli, "/r/gone", "1")
	put(t, cli, "/r/same", "2")
	put(t, cli, "/r/changed", "3")

	c := NewCache(cli, []string{"/r/"}, testLogger())
	rec := &recorder{}
	c.OnEvent(rec.add)
	hold := make(chan struct{})
	held := make(chan struct{})
	n := 0
	c.testHookWatch = func() { // runs on the cache goroutine
		n++
		if n == 2 { // the watch after the one we end
			close(held)
			<-hold
		}
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rec.take()

	// End the watch and keep the cache from watching again while the
	// history it would need is compacted away.
	eventually(t, 5*time.Second, "watch running", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.watchEnd == nil {
			return false
		}
		c.watchEnd()
		return true
	})
	<-held
	before := c.Revision()
	del(t, cli, "/r/gone")
	put(t, cli, "/r/changed", "33")
	put(t, cli, "/r/new", "4")
	rev := put(t, cli, "/elsewhere", "x")
	if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	close(hold)

	if err := c.WaitRevision(ctx, rev); err != nil {
		t.Fatalf("WaitRevision after compaction: %v", err)
	}
	want := []string{
		"PUT /r/changed=33 (was 3)",
		"DELETE /r/gone= (was 1)",
		"PUT /r/new=4",
	}
	evs := rec.take()
	if got := brief(evs); !slices.Equal(got, want) {
		t.Fatalf("events after relist (cache was at %d):\n%q\nwant\n%q", before, got, want)
	}
	if evs[1].Rev < rev {
		t.Fatalf("synthesized Delete at %d, want the relist revision >= %d", evs[1].Rev, rev)
	}
	if got := brief(c.List("/r/")); !slices.Equal(got, []string{"PUT /r/changed=33", "PUT /r/new=4", "PUT /r/same=2"}) {
		t.Fatalf("List after relist = %q", got)
	}

	// And it watches again.
	rev = put(t, cli, "/r/after", "5")
	if err := c.WaitRevision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if got := brief(rec.take()); !slices.Equal(got, []string{"PUT /r/after=5"}) {
		t.Fatalf("events after the relist's watch = %q", got)
	}
}

func TestCacheWaitRevision(t *testing.T) {
	_, cli := startEtcd(t)
	c, _ := startCache(t, cli, "/w/")

	// Writes outside the prefix move no event: progress notifications
	// carry the cache to their revision.
	rev := put(t, cli, "/other", "x")
	ctx := testCtx(t, 10*time.Second)
	if err := c.WaitRevision(ctx, rev); err != nil {
		t.Fatalf("WaitRevision(%d) for a write elsewhere: %v (cache at %d)", rev, err, c.Revision())
	}

	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.WaitRevision(short, rev+1000); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitRevision(future) = %v, want deadline exceeded", err)
	}

	// Waiters are released by Close.
	errc := make(chan error, 1)
	go func() { errc <- c.WaitRevision(context.Background(), rev+1000) }()
	c.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("WaitRevision across Close = %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("WaitRevision not released by Close")
	}
}

func TestCacheStartTimesOut(t *testing.T) {
	srv, cli := startEtcd(t)
	srv.Close() // nothing to list from
	c := NewCache(cli, []string{"/x/"}, testLogger())
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := c.Start(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Start without etcd = %v, want deadline exceeded", err)
	}
	if err := c.WaitRevision(context.Background(), 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("cache not closed after a failed Start: %v", err)
	}
}
