package coordinator

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// Forgetting (issue 13, item 2). What sidecars introduce is not kept for
// ever:
//
//   - a service that has had, for ForgetAfter, no session (live, expired
//     and kept by self-preservation, or deregistered with transactions
//     kept), no registration under way, no unfinished update, no live
//     transaction that used it or may still call it, and that no known
//     service declares as a dependency, is removed: its record, route and
//     pins from etcd (fenced), its node and edges from the graph, learned
//     edges included. A declared dependency stays while its declarer is
//     known: otherwise the declarer's edge to it would be gone when it
//     comes back, and a call over it would be taken for a learned edge.
//     A service that comes back is new: its first registered version is
//     its route, as for any new service;
//   - a version no session runs, no route names, no unfinished update or
//     pin names and no live transaction used, for ForgetAfter, leaves the
//     graph's table of versions (versions have no record of their own);
//   - finished updates are kept, per service, the UpdateRetention newest,
//     and none finished more than UpdateMaxAge ago; older ones are deleted
//     from etcd (fenced) and from memory. An unfinished update is never.
//
// The sweep runs every forgetTick(ForgetAfter); a negative ForgetAfter
// turns forgetting of services and versions off.

// Defaults of the forgetting settings (Config).
const (
	DefaultForgetAfter     = 10 * time.Minute
	DefaultUpdateRetention = 20
	DefaultUpdateMaxAge    = 7 * 24 * time.Hour

	// forgetOpsPerTxn bounds the deletions of one etcd transaction (etcd's
	// default limit is 128 operations).
	forgetOpsPerTxn = 96
)

func (c *Config) setForgetDefaults() {
	if c.ForgetAfter == 0 {
		c.ForgetAfter = DefaultForgetAfter
	}
	if c.UpdateRetention <= 0 {
		c.UpdateRetention = DefaultUpdateRetention
	}
	if c.UpdateMaxAge <= 0 {
		c.UpdateMaxAge = DefaultUpdateMaxAge
	}
}

// forgetTick is how often the sweep runs: a quarter of the grace, within
// [100 ms, 1 min].
func forgetTick(after time.Duration) time.Duration {
	if after <= 0 {
		return time.Minute // update retention only
	}
	return min(max(after/4, 100*time.Millisecond), time.Minute)
}

// forgetState owns forgetting: what has been unused since when, and the
// sweep (its own goroutine, runForget) that removes services, versions and
// finished updates past their time. It finds what is in use by asking each
// serviceUser, removes from the engine, the catalog and the update table
// through their methods, and deletes records through forgetSide. Its state
// is guarded by the event lock, which the sweep takes for each step and
// never holds across an etcd write.
type forgetState struct {
	cfg     *Config
	lg      *slog.Logger
	metrics *metrics
	eng     *graph.Engine
	cat     *catalog
	upd     *updateTable
	routing *routingPublisher
	users   []serviceUser
	side    forgetSide

	// idleSvc and idleVer say since when each unused service and version
	// (by name) has been unused.
	idleSvc map[string]time.Time
	idleVer map[string]time.Time
	// registering counts the registrations under way per service: their
	// session is not in memory yet, but their records are being written.
	registering map[string]int
	services    uint64 // forgotten so far
	versions    uint64
	updates     uint64
}

// forgetSide is what forgetting needs of the Coordinator: the event lock,
// the per-service registration lock (a registration and the removal of the
// service's records exclude each other), and fenced etcd writes.
type forgetSide interface {
	lock()
	unlock()
	lockKey(key string) (unlock func())
	fenced() bool
	commit(ctx context.Context, ops ...storage.Op) error
}

// registeringStart says a registration of svc is under way: its records
// are being written, its session is not in memory yet.
func (f *forgetState) registeringStart(svc string) { f.registering[svc]++ }

// registeringDone says it is over.
func (f *forgetState) registeringDone(svc string) {
	if f.registering[svc]--; f.registering[svc] <= 0 {
		delete(f.registering, svc)
	}
}

// runForget sweeps until the coordinator stops.
func (c *Coordinator) runForget() {
	c.tick(forgetTick(c.cfg.ForgetAfter), func(now time.Time) { c.fg.forgetSweep(c.ctx, now) })
}

// forgetSweep forgets what has been unused long enough, and the updates
// past their retention.
func (f *forgetState) forgetSweep(ctx context.Context, now time.Time) {
	if f.side.fenced() {
		return
	}
	if f.cfg.ForgetAfter > 0 {
		f.forgetServices(ctx, now)
		f.side.lock()
		f.forgetVersionsLocked(now)
		f.side.unlock()
	}
	f.forgetUpdates(ctx, now)
}

// serviceUser is a component that keeps services or versions in use:
// forgetting asks each, under the event lock, and reaches into none.
type serviceUser interface {
	markUsed(service func(graph.ServiceID), version func(graph.VersionID))
}

// users are the components that keep services and versions in use.
func (c *Coordinator) users() []serviceUser {
	return []serviceUser{c.sess, &c.sp, c.orch.upd, c.cat}
}

// idleServicesLocked returns the services unused for ForgetAfter that no
// service staying declares as a dependency; it updates idleSvc.
func (f *forgetState) idleServicesLocked(now time.Time) []graph.ServiceID {
	used := make(map[graph.ServiceID]bool)
	for _, u := range f.users {
		u.markUsed(func(s graph.ServiceID) { used[s] = true }, func(graph.VersionID) {})
	}
	for name, n := range f.registering {
		if id, ok := f.eng.LookupService(name); ok && n > 0 {
			used[id] = true
		}
	}
	due := make(map[graph.ServiceID]bool)
	seen := make(map[string]bool, len(f.idleSvc))
	for i := range f.eng.ServiceIDBound() {
		id := graph.ServiceID(i)
		if !f.eng.ValidService(id) || used[id] || f.eng.UsedCount(id) > 0 {
			continue
		}
		name := f.eng.ServiceName(id)
		seen[name] = true
		since, ok := f.idleSvc[name]
		if !ok {
			f.idleSvc[name] = now
			continue
		}
		if now.Sub(since) >= f.cfg.ForgetAfter {
			due[id] = true
		}
	}
	for name := range f.idleSvc {
		if !seen[name] {
			delete(f.idleSvc, name) // in use again, or gone
		}
	}
	// A service that stays keeps what it declares, to a fixpoint.
	for changed := len(due) > 0; changed; {
		changed = false
		for name, deps := range f.cat.records() {
			if id, ok := f.eng.LookupService(name); ok && due[id] {
				continue
			}
			for _, d := range deps {
				if did, ok := f.eng.LookupService(d); ok && due[did] {
					delete(due, did)
					changed = true
				}
			}
		}
	}
	out := make([]graph.ServiceID, 0, len(due))
	for id := range due {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// forgetServices removes the services unused for ForgetAfter. Those with
// nothing in etcd (a name only ever called) go in one step; the others
// one by one, under the lock a registration of the service takes, their
// records deleted before they leave memory.
func (f *forgetState) forgetServices(ctx context.Context, now time.Time) {
	f.side.lock()
	due := f.idleServicesLocked(now)
	var stored []string
	var bare []graph.ServiceID
	for _, id := range due {
		name := f.eng.ServiceName(id)
		_, hasDeps := f.cat.dependencies(name)
		hasRoute := f.cat.routed(id)
		if hasDeps || hasRoute {
			stored = append(stored, name)
		} else {
			bare = append(bare, id)
		}
	}
	if len(bare) > 0 {
		f.removeServicesLocked(bare, now)
	}
	f.side.unlock()
	for _, name := range stored {
		if ctx.Err() != nil || f.side.fenced() {
			return
		}
		f.forgetStoredService(ctx, name, now)
	}
}

// forgetStoredService removes one service that has records in etcd.
func (f *forgetState) forgetStoredService(ctx context.Context, name string, now time.Time) {
	defer f.side.lockKey("service/" + name)()
	f.side.lock()
	id, ok := f.eng.LookupService(name)
	still := ok && slices.Contains(f.idleServicesLocked(now), id)
	f.side.unlock()
	if !still {
		return // used again since the sweep began
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := f.side.commit(cctx,
		storage.DeleteService(name),
		storage.DeleteRoute(name),
		storage.DeleteServicePins(name))
	cancel()
	if err != nil {
		if !errors.Is(err, ErrFenced) {
			f.lg.Warn("forget service: delete its records", "service", name, "error", err)
		}
		return
	}
	f.side.lock()
	// Its records are gone: so is what memory keeps of them, whatever
	// happens to the graph node below (a call may have used it meanwhile:
	// it is then a service known only from calls, removed later).
	id, ok = f.eng.LookupService(name)
	f.cat.forgetRecord(name, id, ok)
	if ok {
		f.routing.changed(id, name) // its route is gone
		f.removeServicesLocked([]graph.ServiceID{id}, now)
	}
	f.side.unlock()
}

// removeServicesLocked removes services from the graph (those it still
// may) and what the coordinator keeps by their ids.
func (f *forgetState) removeServicesLocked(ids []graph.ServiceID, now time.Time) {
	names := make(map[graph.ServiceID]string, len(ids))
	for _, id := range ids {
		names[id] = f.eng.ServiceName(id)
	}
	removed := f.eng.RemoveServices(ids)
	if len(removed) == 0 {
		return
	}
	gone := make(map[graph.ServiceID]bool, len(removed))
	for _, id := range removed {
		gone[id] = true
		delete(f.idleSvc, names[id])
	}
	narrowed := f.cat.removeServices(gone)
	named := make([]namedEdge, 0, len(narrowed))
	for _, e := range narrowed {
		named = append(named, namedEdge{edge: e, name: names[e.to]})
	}
	f.routing.narrow(named)
	f.upd.removeServices(gone)
	f.services += uint64(len(removed))
	f.metrics.forgotten.WithLabelValues("service").Add(float64(len(removed)))
	first := make([]string, 0, min(len(removed), 5))
	for _, id := range removed[:min(len(removed), 5)] {
		first = append(first, names[id])
	}
	f.lg.Info("forgot unused services", "count", len(removed), "first", strings.Join(first, ","),
		"unused_for_at_least", f.cfg.ForgetAfter)
}

// forgetVersionsLocked removes the versions unused for ForgetAfter.
func (f *forgetState) forgetVersionsLocked(now time.Time) {
	used := make(map[graph.VersionID]bool)
	for _, u := range f.users {
		u.markUsed(func(graph.ServiceID) {}, func(v graph.VersionID) { used[v] = true })
	}
	seen := make(map[string]bool, len(f.idleVer))
	n := 0
	for i := 1; i < f.eng.VersionIDBound(); i++ {
		v := graph.VersionID(i)
		name := f.eng.VersionName(v)
		if name == "" || used[v] || f.eng.VersionUsers(v) > 0 {
			continue
		}
		seen[name] = true
		since, ok := f.idleVer[name]
		if !ok {
			f.idleVer[name] = now
			continue
		}
		if now.Sub(since) >= f.cfg.ForgetAfter && f.eng.RemoveVersion(v) {
			delete(f.idleVer, name)
			n++
		}
	}
	for name := range f.idleVer {
		if !seen[name] {
			delete(f.idleVer, name)
		}
	}
	if n > 0 {
		f.versions += uint64(n)
		f.metrics.forgotten.WithLabelValues("version").Add(float64(n))
		f.lg.Info("forgot unused versions", "count", n, "unused_for_at_least", f.cfg.ForgetAfter)
	}
}

// forgetUpdates deletes the finished updates past their retention: beyond
// the UpdateRetention newest of their service, or finished more than
// UpdateMaxAge ago.
func (f *forgetState) forgetUpdates(ctx context.Context, now time.Time) {
	f.side.lock()
	byService := make(map[string][]*pb.Update)
	for u := range f.upd.all() {
		if u.finished() && u.rec.GetFinishedAt() != nil {
			byService[u.rec.Service] = append(byService[u.rec.Service], u.rec)
		}
	}
	var old []string
	for _, recs := range byService {
		slices.SortFunc(recs, func(a, b *pb.Update) int { // newest first
			return b.GetFinishedAt().AsTime().Compare(a.GetFinishedAt().AsTime())
		})
		for i, r := range recs {
			if i >= f.cfg.UpdateRetention || now.Sub(r.GetFinishedAt().AsTime()) > f.cfg.UpdateMaxAge {
				old = append(old, r.Id)
			}
		}
	}
	f.side.unlock()
	slices.Sort(old)
	for len(old) > 0 && ctx.Err() == nil {
		batch := old[:min(len(old), forgetOpsPerTxn)]
		old = old[len(batch):]
		ops := make([]storage.Op, len(batch))
		for i, id := range batch {
			ops[i] = storage.DeleteUpdate(id)
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f.side.commit(cctx, ops...)
		cancel()
		if err != nil {
			if !errors.Is(err, ErrFenced) {
				f.lg.Warn("forget updates: delete records", "count", len(batch), "error", err)
			}
			return
		}
		f.side.lock()
		f.upd.forget(batch)
		f.updates += uint64(len(batch))
		f.side.unlock()
		f.metrics.forgotten.WithLabelValues("update").Add(float64(len(batch)))
		f.lg.Info("deleted finished updates past their retention", "count", len(batch),
			"keep_per_service", f.cfg.UpdateRetention, "max_age", f.cfg.UpdateMaxAge)
	}
}
