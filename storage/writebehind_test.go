package storage

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// source is a coalescing write source like the coordinator's: the last
// write of a key replaces an earlier pending one; Collect hands out keys in
// the order they first became pending.
type source struct {
	mu      sync.Mutex
	order   []string
	pending map[string]Op
	batches []int
	collect atomic.Int32
}

func newSource() *source { return &source{pending: make(map[string]Op)} }

// rawPut is a put of any key (under "/", the root of testStore's keys).
func rawPut(key, val string, lease LeaseID) Op {
	return Op{kind: opPut, rel: strings.TrimPrefix(key, "/"), val: []byte(val), lease: lease}
}

// testStore is an unfenced Etcd store on cli whose root is "/".
func testStore(cli *clientv3.Client) *Etcd {
	return NewEtcd(cli, EtcdConfig{Prefix: "/", Logger: testLogger()})
}

func (s *source) put(key, val string, lease ...LeaseID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pending[key]; !ok {
		s.order = append(s.order, key)
	}
	var l LeaseID
	if len(lease) > 0 {
		l = lease[0]
	}
	s.pending[key] = rawPut(key, val, l)
}

func (s *source) Collect(max int) []Op {
	s.collect.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(max, len(s.order))
	ops := make([]Op, 0, n)
	for _, k := range s.order[:n] {
		ops = append(ops, s.pending[k])
		delete(s.pending, k)
	}
	s.order = s.order[n:]
	if n > 0 {
		s.batches = append(s.batches, n)
	}
	return ops
}

func (s *source) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.order)
}

func getValue(t *testing.T, cli *clientv3.Client, key string) (string, bool) {
	t.Helper()
	resp, err := cli.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if len(resp.Kvs) == 0 {
		return "", false
	}
	return string(resp.Kvs[0].Value), true
}

func TestWriteBehindBatchesAllLand(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testCtx(t, 60*time.Second)
	src := newSource()
	const maxOps, keys, rounds = 16, 500, 3
	w := NewWriteBehind(testStore(cli), WriteBehindConfig{MaxOps: maxOps, Collect: src.Collect, Logger: testLogger()})
	w.Start()

	for r := range rounds {
		for k := range keys {
			src.put(fmt.Sprintf("/wb/%04d", k), strconv.Itoa(r))
		}
		w.Kick()
	}
	eventually(t, 30*time.Second, "source drained", func() bool { return src.len() == 0 })
	if err := w.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}

	resp, err := cli.Get(ctx, "/wb/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != keys {
		t.Fatalf("%d keys in etcd, want %d", len(resp.Kvs), keys)
	}
	for _, kv := range resp.Kvs {
		if string(kv.Value) != strconv.Itoa(rounds-1) {
			t.Fatalf("%s = %s, want the last round %d", kv.Key, kv.Value, rounds-1)
		}
	}
	total := 0
	for _, n := range src.batches {
		if n > maxOps {
			t.Fatalf("a batch of %d ops, MaxOps is %d", n, maxOps)
		}
		total += n
	}
	st := w.Stats()
	if st.Ops != uint64(total) || st.Txns != uint64(len(src.batches)) || st.Pending != 0 || st.Failures != 0 {
		t.Fatalf("Stats = %+v; collected %d ops in %d batches", st, total, len(src.batches))
	}
	if st.AvgLatency <= 0 || st.LastLatency <= 0 || st.MaxLatency < st.AvgLatency || st.LastFlush.IsZero() {
		t.Fatalf("latency stats not kept: %+v", st)
	}
	t.Logf("%d ops (of %d writes) in %d txns, avg %v, max %v", st.Ops, keys*rounds, st.Txns, st.AvgLatency, st.MaxLatency)
}

// Per-key order: a watcher sees every key's values increase, although
// ops are written concurrently with new writes of the same keys.
func TestWriteBehindPerKeyOrder(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testCtx(t, 60*time.Second)
	src := newSource()
	w := NewWriteBehind(testStore(cli), WriteBehindConfig{MaxOps: 8, Interval: time.Millisecond, Collect: src.Collect, Logger: testLogger()})

	start, err := cli.Get(ctx, "/order/")
	if err != nil {
		t.Fatal(err)
	}
	wch := cli.Watch(ctx, "/order/", clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision+1))
	w.Start()

	const keys, writes = 20, 2000
	for i := range writes {
		src.put(fmt.Sprintf("/order/%02d", i%keys), strconv.Itoa(i))
		if i%50 == 0 {
			w.Kick()
		}
	}
	if err := w.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	final := func(k int) int { return writes - keys + k }
	last := map[string]int{}
	done := 0
	for resp := range wch { // ends with ctx
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			v, _ := strconv.Atoi(string(ev.Kv.Value))
			if p, ok := last[key]; ok && v <= p {
				t.Fatalf("%s went from %d to %d", key, p, v)
			}
			last[key] = v
			if k, _ := strconv.Atoi(key[len("/order/"):]); v == final(k) {
				done++
			}
		}
		if done == keys {
			break
		}
	}
	for k := range keys {
		key := fmt.Sprintf("/order/%02d", k)
		if last[key] != final(k) {
			t.Fatalf("%s ended at %d, want %d", key, last[key], final(k))
		}
	}
}

func TestWriteBehindStopFlushes(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testCtx(t, 30*time.Second)
	src := newSource()
	// The flusher would not wake for an hour: only Stop writes.
	w := NewWriteBehind(testStore(cli), WriteBehindConfig{Interval: time.Hour, Collect: src.Collect, Logger: testLogger()})
	w.Start()
	for i := range 300 {
		src.put(fmt.Sprintf("/stop/%03d", i), "v")
	}
	if err := w.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	resp, err := cli.Get(ctx, "/stop/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 300 {
		t.Fatalf("after Stop %v keys (%v), want 300", resp.Count, err)
	}
	if st := w.Stats(); st.Txns != 3 { // 128 + 128 + 44
		t.Fatalf("Stats = %+v, want 3 txns", st)
	}
	// Flush still works after Stop; the loop does not.
	src.put("/stop/late", "v")
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := getValue(t, cli, "/stop/late"); !ok {
		t.Fatalf("Flush after Stop did not write")
	}
}

func TestWriteBehindLeaseNotFound(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testCtx(t, 30*time.Second)
	live, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	dead, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(ctx, dead.ID); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var reported []LeaseID
	src := newSource()
	w := NewWriteBehind(testStore(cli), WriteBehindConfig{
		Collect: src.Collect,
		Logger:  testLogger(),
		OnLeaseNotFound: func(id LeaseID) {
			mu.Lock()
			reported = append(reported, id)
			mu.Unlock()
		},
	})
	for i := range 30 {
		switch i % 3 {
		case 0:
			src.put(fmt.Sprintf("/lnf/live/%02d", i), "v", LeaseID(live.ID))
		case 1:
			src.put(fmt.Sprintf("/lnf/dead/%02d", i), "v", LeaseID(dead.ID))
		default:
			src.put(fmt.Sprintf("/lnf/none/%02d", i), "v")
		}
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	count := func(p string) int64 {
		resp, err := cli.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	if l, d, n := count("/lnf/live/"), count("/lnf/dead/"), count("/lnf/none/"); l != 10 || d != 0 || n != 10 {
		t.Fatalf("written live=%d dead=%d none=%d, want 10 0 10", l, d, n)
	}
	if st := w.Stats(); st.Dropped != 10 || st.Pending != 0 {
		t.Fatalf("Stats = %+v, want 10 dropped", st)
	}

	// More writes on the dead lease: dropped, not reported again.
	src.put("/lnf/dead/late", "v", LeaseID(dead.ID))
	src.put("/lnf/none/late", "v")
	if err := w.Flush(ctx); err != nil {
		t.Fatalf("second Flush: %v", err)
	}
	if _, ok := getValue(t, cli, "/lnf/none/late"); !ok {
		t.Fatalf("op without lease lost next to a dead lease's")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reported) != 1 || reported[0] != LeaseID(dead.ID) {
		t.Fatalf("OnLeaseNotFound got %v, want once %x", reported, dead.ID)
	}
}

func TestWriteBehindFenced(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testCtx(t, 30*time.Second)
	put, err := cli.Put(ctx, "/fence", "me")
	if err != nil {
		t.Fatal(err)
	}
	src := newSource()
	fenced := NewEtcd(cli, EtcdConfig{Prefix: "/", Logger: testLogger(),
		Fence: &Fence{Key: "/fence", CreateRev: put.Header.Revision}})
	w := NewWriteBehind(fenced, WriteBehindConfig{
		Collect: src.Collect,
		Logger:  testLogger(),
	})
	w.Start()
	src.put("/fenced/a", "1")
	if err := w.Flush(ctx); err != nil {
		t.Fatalf("Flush while leading: %v", err)
	}
	if _, ok := getValue(t, cli, "/fenced/a"); !ok {
		t.Fatalf("write while leading lost")
	}

	// Someone else's election key now.
	if _, err := cli.Delete(ctx, "/fence"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/fence", "someone else"); err != nil {
		t.Fatal(err)
	}
	src.put("/fenced/b", "2")
	if err := w.Flush(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("Flush after losing the fence = %v, want ErrFenced", err)
	}
	if _, ok := getValue(t, cli, "/fenced/b"); ok {
		t.Fatalf("fenced write reached etcd")
	}
	if !errors.Is(w.Err(), ErrFenced) || !w.Stats().Fenced {
		t.Fatalf("Err() = %v, Stats = %+v; want fenced", w.Err(), w.Stats())
	}
	calls := src.collect.Load()
	src.put("/fenced/c", "3")
	w.Kick()
	if err := w.Stop(ctx); !errors.Is(err, ErrFenced) {
		t.Fatalf("Stop = %v, want ErrFenced", err)
	}
	if got := src.collect.Load(); got != calls {
		t.Fatalf("Collect called %d more times after fencing", got-calls)
	}
}

// flakyKV fails the first n transactions with a transient error, as etcd
// does without a leader.
type flakyKV struct {
	clientv3.KV
	fail atomic.Int32
}

func (f *flakyKV) Txn(ctx context.Context) clientv3.Txn {
	return &flakyTxn{Txn: f.KV.Txn(ctx), kv: f}
}

type flakyTxn struct {
	clientv3.Txn
	kv *flakyKV
}

func (t *flakyTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *flakyTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t *flakyTxn) Commit() (*clientv3.TxnResponse, error) {
	if t.kv.fail.Add(-1) >= 0 {
		return nil, rpctypes.ErrNoLeader
	}
	return t.Txn.Commit()
}

func TestWriteBehindRetriesTransient(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testCtx(t, 30*time.Second)
	kv := &flakyKV{KV: cli.KV}
	kv.fail.Store(4)
	cli.KV = kv
	src := newSource()
	w := NewWriteBehind(testStore(cli), WriteBehindConfig{MaxOps: 10, Collect: src.Collect, Logger: testLogger()})
	for i := range 25 {
		src.put(fmt.Sprintf("/flaky/%02d", i), strconv.Itoa(i))
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	resp, err := cli.Get(ctx, "/flaky/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 25 {
		t.Fatalf("%d keys after retries (%v), want 25", len(resp.Kvs), err)
	}
	// The retried batch kept its ops: each key has its own value.
	for i, kv := range resp.Kvs {
		if string(kv.Value) != strconv.Itoa(i) {
			t.Fatalf("%s = %s, want %d", kv.Key, kv.Value, i)
		}
	}
	if st := w.Stats(); st.Failures != 4 || st.Txns != 3 || st.LastError != nil {
		t.Fatalf("Stats = %+v, want 4 failures, 3 txns", st)
	}
}

func TestWriteBehindStopInterruptsRetries(t *testing.T) {
	_, cli := startEtcd(t)
	kv := &flakyKV{KV: cli.KV}
	kv.fail.Store(1 << 30)
	cli.KV = kv
	src := newSource()
	w := NewWriteBehind(testStore(cli), WriteBehindConfig{Collect: src.Collect, Logger: testLogger()})
	w.Start()
	src.put("/stuck", "v")
	eventually(t, 10*time.Second, "a failed attempt", func() bool { return w.Stats().Failures > 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := w.Stop(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop with etcd failing = %v, want deadline exceeded", err)
	}
	if st := w.Stats(); st.Pending != 1 {
		t.Fatalf("Stats = %+v, want the op kept pending", st)
	}
	// Once etcd works again a Flush writes what Stop could not.
	kv.fail.Store(0)
	if err := w.Flush(testCtx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, ok := getValue(t, cli, "/stuck"); !ok {
		t.Fatalf("kept op not written")
	}
}

// MaxOps above etcd's --max-txn-ops: etcd refuses the transaction and the
// write-behind splits it.
func TestWriteBehindSplitsRefusedBatch(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testCtx(t, 30*time.Second)
	src := newSource()
	w := NewWriteBehind(testStore(cli), WriteBehindConfig{MaxOps: 300, Collect: src.Collect, Logger: testLogger()})
	for i := range 300 {
		src.put(fmt.Sprintf("/split/%03d", i), "v")
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	resp, err := cli.Get(ctx, "/split/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 300 {
		t.Fatalf("%v keys (%v), want 300", resp.Count, err)
	}
	if st := w.Stats(); st.Dropped != 0 || st.Txns < 3 {
		t.Fatalf("Stats = %+v, want >= 3 txns, none dropped", st)
	}
}

// An idle source lets the flusher sleep: no Collect while nothing is
// pending, and what is written after a Wake lands without any Kick.
func TestWriteBehindSleepsWhileIdle(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testCtx(t, 60*time.Second)
	src := newSource()
	var idleSeen atomic.Int32
	idle := func() bool {
		if src.len() > 0 {
			return false
		}
		idleSeen.Add(1)
		return true
	}
	const interval = time.Millisecond
	w := NewWriteBehind(testStore(cli), WriteBehindConfig{Interval: interval, Collect: src.Collect, Idle: idle, Logger: testLogger()})
	w.Start()
	defer func() {
		if err := w.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	}()

	for round := range 3 {
		// The first round starts idle: the first tick finds nothing.
		eventually(t, 30*time.Second, "the flusher found the source idle", func() bool { return idleSeen.Load() > 0 })
		idleSeen.Store(0)
		before := src.collect.Load()
		time.Sleep(100 * interval) // a ticking flusher would collect about 100 times
		if n := src.collect.Load() - before; n != 0 {
			t.Fatalf("round %d: %d Collect calls while the source was idle, want 0", round, n)
		}
		if n := idleSeen.Load(); n != 0 {
			t.Fatalf("round %d: Idle asked %d times while asleep", round, n)
		}
		key := fmt.Sprintf("/wb/idle/%d", round)
		src.put(key, "v")
		w.Wake()
		eventually(t, 30*time.Second, key+" written", func() bool { _, ok := getValue(t, cli, key); return ok })
	}
}

// Without Idle the flusher ticks as before: a put lands without Wake.
func TestWriteBehindWithoutIdleTicks(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testCtx(t, 60*time.Second)
	src := newSource()
	w := NewWriteBehind(testStore(cli), WriteBehindConfig{Interval: time.Millisecond, Collect: src.Collect, Logger: testLogger()})
	w.Start()
	defer func() {
		if err := w.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	}()
	eventually(t, 30*time.Second, "the flusher ticking", func() bool { return src.collect.Load() > 3 })
	src.put("/wb/noidle", "v")
	eventually(t, 30*time.Second, "/wb/noidle written", func() bool { _, ok := getValue(t, cli, "/wb/noidle"); return ok })
}
