package graph

import (
	"fmt"
	"runtime"
	"testing"
)

// traceID returns a 32-hex-digit id, the size of a W3C trace id.
func traceID(i int) string { return fmt.Sprintf("%032x", i) }

// run5 begins txn at s[0] and calls down the chain s[0]→…→s[4]: five running
// sub-transactions on five services.
func run5(tb testing.TB, e *Engine, s []ServiceID, v VersionID, txn string) {
	if err := e.Begin(txn, s[0], v, 1, 1); err != nil {
		tb.Fatal(err)
	}
	for j := 1; j < 5; j++ {
		if _, err := e.Call(txn, s[j-1], v, SubID(j), s[j], SubID(j+1), v); err != nil {
			tb.Fatal(err)
		}
	}
}

// bytesPerTxn measures the heap held per live transaction of run5, id string,
// map entries, blocker index and write-behind queue included.
func bytesPerTxn(tb testing.TB, n int) float64 {
	e := New()
	s := chain(e, 5)
	v := e.Version("v1")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		run5(tb, e, s, v, traceID(i))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if e.Live() != n || e.BlockerCount(s[4]) != n {
		tb.Fatal("transactions lost")
	}
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// TestSteadyStateAllocs: with the write-behind taking records, a transaction's
// life allocates nothing once the engine is warm.
func TestSteadyStateAllocs(t *testing.T) {
	e := New()
	s := chain(e, 5)
	v := e.Version("v1")
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = traceID(i)
	}
	n := 0
	cycle := func() {
		id := ids[n%len(ids)]
		n++
		run5(t, e, s, v, id)
		if n%2 == 0 {
			e.TakeDirty(10, func(Record) {}) // half of them get written
		}
		for j := 5; j > 1; j-- {
			must(t, e.Return(id, SubID(j)))
		}
		must(t, e.Done(id, 1, s[1]))
		must(t, e.End(id))
		e.TakeDirty(10, func(Record) {})
	}
	for range 2 * len(ids) {
		cycle()
	}
	if a := testing.AllocsPerRun(len(ids), cycle); a != 0 {
		t.Errorf("%v allocations per transaction", a)
	}
}

func TestMemoryPerTxn(t *testing.T) {
	n := 100000
	if testing.Short() {
		n = 20000
	}
	if b := bytesPerTxn(t, n); b > 1024 {
		t.Errorf("%.0f bytes per live 5-service transaction, want <= 1024", b)
	}
}

func BenchmarkMemoryPerTxn(b *testing.B) {
	var bytes float64
	for b.Loop() {
		bytes = bytesPerTxn(b, 100000)
	}
	b.ReportMetric(bytes, "bytes/txn")
}

// BenchmarkEvents runs Begin, Call×4, Return×4, End (10 events) per op on a
// 5-service chain, with 1000 other live transactions, taking the dirty
// records every 64 ops as the write-behind would.
func BenchmarkEvents(b *testing.B) {
	e := New()
	s := chain(e, 5)
	v := e.Version("v1")
	for i := range 1000 {
		run5(b, e, s, v, fmt.Sprint("bg", i))
	}
	ids := make([]string, 1<<17)
	for i := range ids {
		ids[i] = traceID(i)
	}
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		id := ids[n&(len(ids)-1)]
		run5(b, e, s, v, id)
		for j := 5; j > 1; j-- {
			if err := e.Return(id, SubID(j)); err != nil {
				b.Fatal(err)
			}
		}
		if err := e.End(id); err != nil {
			b.Fatal(err)
		}
		if n%64 == 0 {
			e.TakeDirty(128, func(Record) {})
		}
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*10), "ns/event")
}

func BenchmarkFree(b *testing.B) {
	e := New()
	s := chain(e, 5)
	v := e.Version("v1")
	for i := range 1000 {
		run5(b, e, s, v, traceID(i))
	}
	n := 0
	for b.Loop() {
		if e.Free(s[n%5]) {
			b.Fatal("free")
		}
		n++
	}
}

// BenchmarkBlockers asks for 10 of the 10000 transactions blocking a service.
func BenchmarkBlockers(b *testing.B) {
	e := New()
	s := chain(e, 5)
	v := e.Version("v1")
	for i := range 10000 {
		run5(b, e, s, v, traceID(i))
	}
	b.ReportAllocs()
	for b.Loop() {
		if len(e.Blockers(s[2], 10)) != 10 {
			b.Fatal("blockers")
		}
	}
}

// bytesPerService measures the heap held per service when one hub service
// calls n others, each new (the shape of a sidecar that calls invented
// service names: every call interns a service and learns an edge), with
// one live transaction running through the last of them.
func bytesPerService(tb testing.TB, n int) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	e := New()
	hub := e.Service("hub")
	v := e.Version("v1")
	if err := e.Begin("t", hub, v, 1, 1); err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		to := e.Service(fmt.Sprint("invented-", i))
		if _, err := e.Call("t", hub, v, 1, to, SubID(i+2), v); err != nil {
			tb.Fatal(err)
		}
		if err := e.Return("t", SubID(i+2)); err != nil {
			tb.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if e.NumServices() != n+1 || !e.HasEdge(hub, ServiceID(n)) {
		tb.Fatal("services lost")
	}
	runtime.KeepAlive(e)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
}

// TestMemoryPerService: what a service costs does not grow with the number
// of services (issue 13: per-service bitsets were as long as the number of
// services, so their total grew with its square).
func TestMemoryPerService(t *testing.T) {
	small, large := bytesPerService(t, 2000), bytesPerService(t, 20000)
	t.Logf("bytes per service: %.0f with 2000 services, %.0f with 20000", small, large)
	if large > 1024 || large > 2*small {
		t.Errorf("%.0f bytes per service with 20000 services (%.0f with 2000), want <= 1024 and not growing", large, small)
	}
}

func BenchmarkMemoryPerService(b *testing.B) {
	for _, n := range []int{1000, 10000, 30000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var bytes float64
			for b.Loop() {
				bytes = bytesPerService(b, n)
			}
			b.ReportMetric(bytes, "bytes/service")
		})
	}
}

// BenchmarkAnyBlockerUsing asks, as a CV update's drain does after every
// batch, whether any of the 100,000 transactions blocking a service used
// it at the old version, when all of them use the new one: the answer
// every batch gets until the old side drains.
func BenchmarkAnyBlockerUsing(b *testing.B) {
	e := New()
	s := chain(e, 5)
	v1, v2 := e.Version("v1"), e.Version("v2")
	for i := range 100_000 {
		run5(b, e, s, v2, traceID(i))
	}
	if e.BlockersUsing(s[2], v2) != 100_000 {
		b.Fatal("blockers")
	}
	b.ReportAllocs()
	for b.Loop() {
		if e.AnyBlockerUsing(s[2], v1) {
			b.Fatal("a v1 user")
		}
	}
}
