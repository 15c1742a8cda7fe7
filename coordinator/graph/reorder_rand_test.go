package graph

import (
	"errors"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

var reorderSeed = flag.Uint64("reorder.seed", 0, "run only this seed of TestReorder")

// tev is one event of a trace, with the sidecar stream that sends it.
type tev struct {
	kind           byte // 'B'egin, 'C'all, 'R'eturn, 'D'one, 'E'nd
	breaks         bool // a Call its caller said Done to: the hint was a lie
	txn            string
	stream         int
	from, to       ServiceID
	fromVer, toVer VersionID
	caller, sub    SubID
}

func (ev tev) String() string {
	switch ev.kind {
	case 'B':
		return fmt.Sprintf("#%d Begin(%s, s%d, sub %d)", ev.stream, ev.txn, ev.to, ev.sub)
	case 'C':
		return fmt.Sprintf("#%d Call(%s, s%d/%d -> s%d/%d)", ev.stream, ev.txn, ev.from, ev.caller, ev.to, ev.sub)
	case 'R':
		return fmt.Sprintf("#%d Return(%s, %d)", ev.stream, ev.txn, ev.sub)
	case 'D':
		return fmt.Sprintf("#%d Done(%s, %d, s%d)", ev.stream, ev.txn, ev.sub, ev.to)
	}
	return fmt.Sprintf("#%d End(%s)", ev.stream, ev.txn)
}

func (ev tev) apply(e *Engine) error {
	switch ev.kind {
	case 'B':
		return e.Begin(ev.txn, ev.to, ev.toVer, ev.sub, 1)
	case 'C':
		_, err := e.Call(ev.txn, ev.from, ev.fromVer, ev.caller, ev.to, ev.sub, ev.toVer)
		return err
	case 'R':
		return e.Return(ev.txn, ev.sub)
	case 'D':
		return e.Done(ev.txn, ev.sub, ev.to)
	}
	return e.End(ev.txn)
}

// gsub and gtxn are the generator's view of what physically runs.
type gsub struct {
	svc      ServiceID
	stream   int // the sidecar instance it runs on
	caller   SubID
	children int
	done     map[ServiceID]bool
}

type gtxn struct {
	id   string
	root SubID
	subs map[SubID]*gsub
	ver  map[ServiceID]VersionID // the version T runs each service at
}

// genTrace makes a random trace in physical order over a random static
// graph: nested synchronous calls (a sub returns after its callees), done
// hints (rarely broken by a later call), transactions that end once their
// root is alone, and some that stay live. Each service has one or two
// sidecar instances; the stream of an event is the instance that sends it.
func genTrace(rng *rand.Rand, e1, e2 *Engine) (n int, evs []tev) {
	n = 2 + rng.IntN(8)
	cyclic := rng.IntN(2) == 1
	p := 0.2 + 0.3*rng.Float64()
	succ := make([][]ServiceID, n)
	for i := range n {
		e1.Service(fmt.Sprint("s", i))
		e2.Service(fmt.Sprint("s", i))
	}
	for x := range n {
		for y := range n {
			if (cyclic || x < y) && rng.Float64() < p {
				succ[x] = append(succ[x], ServiceID(y))
				e1.AddEdge(ServiceID(x), ServiceID(y))
				e2.AddEdge(ServiceID(x), ServiceID(y))
			}
		}
	}
	vers := []VersionID{e1.Version("v1"), e1.Version("v2")}
	e2.Version("v1")
	e2.Version("v2")
	instances := make([]int, n)
	for i := range instances {
		instances[i] = 1 + rng.IntN(2)
	}
	stream := func(s ServiceID) int { return int(s)*2 + rng.IntN(instances[s]) }

	var live []*gtxn
	var nextTxn int
	var nextSub SubID
	ver := func(t *gtxn, s ServiceID) VersionID {
		if _, ok := t.ver[s]; !ok {
			t.ver[s] = vers[rng.IntN(2)]
		}
		return t.ver[s]
	}
	steps := 40 + rng.IntN(160)
	for range steps {
		if len(live) == 0 || len(live) < 4 && rng.IntN(6) == 0 {
			nextTxn++
			nextSub++
			entry := ServiceID(rng.IntN(n))
			t := &gtxn{id: fmt.Sprint("t", nextTxn), root: nextSub, subs: map[SubID]*gsub{}, ver: map[ServiceID]VersionID{}}
			t.subs[nextSub] = &gsub{svc: entry, stream: stream(entry), done: map[ServiceID]bool{}}
			live = append(live, t)
			evs = append(evs, tev{kind: 'B', txn: t.id, stream: t.subs[nextSub].stream, to: entry, toVer: ver(t, entry), sub: nextSub})
			continue
		}
		ti := rng.IntN(len(live))
		t := live[ti]
		ids := slices.Sorted(maps.Keys(t.subs))
		x := ids[rng.IntN(len(ids))]
		xs := t.subs[x]
		switch r := rng.IntN(100); {
		case r < 45: // Call
			var ys []ServiceID
			for _, y := range succ[xs.svc] {
				if !xs.done[y] || rng.IntN(20) == 0 { // now and then a broken hint
					ys = append(ys, y)
				}
			}
			if len(ys) == 0 {
				continue
			}
			y := ys[rng.IntN(len(ys))]
			breaks := xs.done[y]
			delete(xs.done, y)
			nextSub++
			t.subs[nextSub] = &gsub{svc: y, stream: stream(y), caller: x, done: map[ServiceID]bool{}}
			xs.children++
			evs = append(evs, tev{kind: 'C', txn: t.id, stream: xs.stream, from: xs.svc, fromVer: ver(t, xs.svc),
				caller: x, to: y, sub: nextSub, toVer: ver(t, y), breaks: breaks})
		case r < 75: // Return, sent by the caller's instance once the sub's own calls returned
			if x == t.root || xs.children > 0 {
				continue
			}
			c := t.subs[xs.caller]
			c.children--
			delete(t.subs, x)
			evs = append(evs, tev{kind: 'R', txn: t.id, stream: c.stream, sub: x})
		case r < 96: // Done, sent by the sub's own instance
			var y ServiceID
			if len(succ[xs.svc]) > 0 && rng.IntN(4) > 0 {
				y = succ[xs.svc][rng.IntN(len(succ[xs.svc]))]
			} else {
				y = ServiceID(rng.IntN(n))
			}
			xs.done[y] = true
			evs = append(evs, tev{kind: 'D', txn: t.id, stream: xs.stream, sub: x, to: y})
		default: // End, once the root runs alone
			if len(t.subs) > 1 {
				continue
			}
			live = slices.Delete(live, ti, ti+1)
			evs = append(evs, tev{kind: 'E', txn: t.id, stream: t.subs[t.root].stream})
		}
	}
	return n, evs
}

// reorderCounts tallies, over all seeds, that the orders the test is about
// did occur.
type reorderCounts struct {
	returned, ended, lateCallerSkipped, early uint64
}

// TestReorder delivers random traces in random interleavings that keep each
// stream's order, and compares with in-order delivery: whenever every event
// up to a cut of the trace has arrived, FREENESS, blockers and every
// transaction's state equal the in-order engine's. In half of the runs one
// service S is in update mode: a Call to S waits for the coordinator, so it
// is applied before anything that physically follows it (so is a Begin at
// S); then, at every
// step of the partial delivery, S is never free while the in-order engine,
// as of the newest event that has arrived, has a transaction blocking S
// that will still call S: that transaction blocks S in the reordered engine
// too. (Unless it broke a done hint: a lie the coordinator believes until
// the Call that breaks it arrives.)
func TestReorder(t *testing.T) {
	seeds := uint64(1500)
	if testing.Short() {
		seeds = 200
	}
	var c reorderCounts
	if *reorderSeed != 0 {
		runReorder(t, *reorderSeed, &c)
		return
	}
	for seed := uint64(1); seed <= seeds; seed++ {
		runReorder(t, seed, &c)
	}
	t.Logf("late events about returned subs %d, about ended transactions %d; late calls of returned callers %d; done hints before their call %d",
		c.returned, c.ended, c.lateCallerSkipped, c.early)
	if c.returned == 0 || c.ended == 0 || c.lateCallerSkipped == 0 || c.early == 0 {
		t.Errorf("the traces did not exercise every reordering: %+v", c)
	}
}

func runReorder(t *testing.T, seed uint64, c *reorderCounts) {
	rng := rand.New(rand.NewPCG(seed, 0x2545f4914f6cdd1d))
	ref, rev := New(), New() // in-order, reordered
	n, evs := genTrace(rng, ref, rev)
	var delivered []int // trace indexes in delivery order
	fail := func(format string, args ...any) {
		t.Helper()
		var order []string
		for _, i := range delivered {
			order = append(order, fmt.Sprintf("%d:%v", i, evs[i]))
		}
		t.Fatalf("seed %d (rerun with -reorder.seed=%d): %s\ntrace: %v\ndelivered: %v",
			seed, seed, fmt.Sprintf(format, args...), evs, order)
	}

	sync := ServiceID(0) // the service in update mode, if any
	constrained := rng.IntN(2) == 0
	if constrained {
		sync = ServiceID(rng.IntN(n))
	}
	// A Call to sync waits for the coordinator's answer. A root that starts
	// at sync is taken to be reported before it does anything else too:
	// else the coordinator could not know that it runs there at all.
	isSync := func(i int) bool {
		return constrained && (evs[i].kind == 'C' || evs[i].kind == 'B') && evs[i].to == sync
	}
	// laterSync[T] = trace indexes of T's calls to sync, in order.
	laterSync := map[string][]int{}
	liar := map[string]bool{}
	for i, ev := range evs {
		liar[ev.txn] = liar[ev.txn] || ev.breaks
		if isSync(i) {
			laterSync[ev.txn] = append(laterSync[ev.txn], i)
		}
	}

	refAt := 0 // ref has applied evs[:refAt]
	advance := func(to int) {
		for ; refAt < to; refAt++ {
			if err := evs[refAt].apply(ref); err != nil {
				fail("in order, %v: %v", evs[refAt], err)
			}
		}
	}
	deliver := func(i int) {
		delivered = append(delivered, i)
		ev := evs[i]
		if ev.kind == 'C' && !rev.isRunning(ev.txn, ev.caller) && rev.returnedIn(ev.txn, ev.caller) {
			c.lateCallerSkipped++
		}
		before := rev.reorder.EarlyDone
		err := ev.apply(rev)
		c.early += rev.reorder.EarlyDone - before
		switch {
		case err == nil:
		case errors.Is(err, ErrSubReturned):
			c.returned++
		case errors.Is(err, ErrTxnEnded):
			c.ended++
		default:
			fail("reordered, %v: %v", ev, err)
		}
	}
	soundness := func(now int) {
		advance(now + 1)
		for _, b := range ref.Blockers(sync, 1<<20) {
			if liar[b.Txn] {
				continue // its broken hint, applied before the Call that breaks it, is believed
			}
			calls := laterSync[b.Txn]
			if i, _ := slices.BinarySearch(calls, now+1); i < len(calls) &&
				(rev.Free(sync) || !rev.HasFuture(b.Txn, sync) || !rev.HasPast(b.Txn, sync)) {
				fail("s%d free %v after %d events, %s not blocking it (future %v, past %v), while it does in order as of event %d and calls it at event %d",
					sync, rev.Free(sync), len(delivered), b.Txn, rev.HasFuture(b.Txn, sync), rev.HasPast(b.Txn, sync), now, calls[i])
			}
		}
	}

	for lo := 0; lo < len(evs); {
		hi := min(len(evs), lo+1+rng.IntN(40))
		queues := map[int][]int{}   // stream -> pending trace indexes, in order
		weight := map[int]float64{} // some streams lag behind others
		for i := lo; i < hi; i++ {
			s := evs[i].stream
			queues[s] = append(queues[s], i)
			if _, ok := weight[s]; !ok {
				weight[s] = 0.01 + rng.Float64()*rng.Float64()
			}
		}
		now := lo - 1
		for left := hi - lo; left > 0; left-- {
			// A Call to the service in update mode is applied before
			// anything that physically follows it.
			barrier := hi
			for _, q := range queues {
				for _, i := range q {
					if isSync(i) {
						barrier = min(barrier, i)
						break
					}
				}
			}
			var heads []int
			for s, q := range queues {
				if len(q) > 0 && q[0] <= barrier {
					heads = append(heads, s)
				}
			}
			slices.Sort(heads)
			total := 0.0
			for _, s := range heads {
				total += weight[s]
			}
			s, x := heads[len(heads)-1], rng.Float64()*total
			for _, h := range heads {
				if x -= weight[h]; x < 0 {
					s = h
					break
				}
			}
			i := queues[s][0]
			queues[s] = queues[s][1:]
			deliver(i)
			now = max(now, i)
			if constrained {
				soundness(now)
			}
		}
		advance(hi)
		compareEngines(fail, n, ref, rev)
		lo = hi
	}
}

func (e *Engine) isRunning(txn string, sub SubID) bool {
	t := e.txns[txn]
	return t != nil && t.findSub(sub) >= 0
}

func (e *Engine) returnedIn(txn string, sub SubID) bool {
	t := e.txns[txn]
	return t != nil && t.wasReturned(sub)
}

// compareEngines fails unless rev, which every event of ref has reached in
// some order, answers as ref does.
func compareEngines(fail func(string, ...any), n int, ref, rev *Engine) {
	if ref.Live() != rev.Live() {
		fail("live %d, in order %d", rev.Live(), ref.Live())
	}
	type sub struct {
		svc  ServiceID
		done []ServiceID
	}
	ref.ForEachTxn(func(want TxnInfo) bool {
		got, ok := rev.Txn(want.ID)
		if !ok {
			fail("%s not live", want.ID)
		}
		if got.Entry != want.Entry || got.Owner != want.Owner || got.Implicit != want.Implicit ||
			!slices.Equal(got.Blocks, want.Blocks) {
			fail("%s: %+v, in order %+v", want.ID, got, want)
		}
		subs := func(ti TxnInfo) map[SubID]sub {
			m := map[SubID]sub{}
			for _, r := range ti.Running {
				m[r.ID] = sub{r.Service, slices.Sorted(slices.Values(r.Done))}
			}
			return m
		}
		uses := func(ti TxnInfo) map[ServiceID]VersionID {
			m := map[ServiceID]VersionID{}
			for _, u := range ti.Used {
				m[u.Service] = u.Version
			}
			return m
		}
		if !maps.EqualFunc(subs(got), subs(want), func(a, b sub) bool { return a.svc == b.svc && slices.Equal(a.done, b.done) }) ||
			!maps.Equal(uses(got), uses(want)) {
			fail("%s: running %+v used %v, in order %+v %v", want.ID, got.Running, got.Used, want.Running, want.Used)
		}
		for s := range ServiceID(n) {
			if rev.HasFuture(want.ID, s) != ref.HasFuture(want.ID, s) || rev.HasPast(want.ID, s) != ref.HasPast(want.ID, s) {
				fail("%s at s%d: future %v past %v, in order %v %v", want.ID, s,
					rev.HasFuture(want.ID, s), rev.HasPast(want.ID, s), ref.HasFuture(want.ID, s), ref.HasPast(want.ID, s))
			}
		}
		if early := rev.txns[want.ID].early; len(early) > 0 {
			fail("%s keeps hints %v after every event arrived", want.ID, early)
		}
		return true
	})
	if len(rev.orphans)+len(rev.oldOrphans) > 0 {
		fail("hints of transactions never seen: %v %v", rev.orphans, rev.oldOrphans)
	}
	for s := range ServiceID(n) {
		if rev.Free(s) != ref.Free(s) || rev.BlockerCount(s) != ref.BlockerCount(s) {
			fail("s%d: free %v (%d blockers), in order %v (%d)", s, rev.Free(s), rev.BlockerCount(s), ref.Free(s), ref.BlockerCount(s))
		}
		type why struct {
			running, legacy, viaOK bool
			past                   VersionID
		}
		reasons := func(e *Engine) map[string]why {
			m := map[string]why{}
			for _, b := range e.Blockers(s, 1<<20) {
				m[b.Txn] = why{b.Running, b.Legacy, b.FutureViaOK, b.PastVersion}
				if !b.Running && !e.HasFuture(b.Txn, b.FutureVia) {
					fail("s%d blocker %+v: FutureVia is not where %s runs or may go", s, b, b.Txn)
				}
			}
			return m
		}
		if got, want := reasons(rev), reasons(ref); !maps.Equal(got, want) {
			fail("s%d blockers %+v, in order %+v", s, got, want)
		}
	}
}
