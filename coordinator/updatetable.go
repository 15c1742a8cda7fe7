package coordinator

import (
	"iter"
	"sync"

	"github.com/coordinator/coordinator/coordinator/graph"
)

// updateTable owns the updates: the unfinished one of each service, every
// update kept in history by id, and the first-use pins read from etcd at
// restore for the services mid-update (what a transaction the coordinator
// did not see start used there: DESIGN.md §4.5, §6). The orchestrator
// (update.go) drives the updates it holds; the phase writer stores their
// phases.
//
// Locking, as for sessionTable: changes are made under the event lock and
// the table's mu; readers hold either. mu is a leaf.
type updateTable struct {
	mu           sync.RWMutex
	byService    map[graph.ServiceID]*update // unfinished, by each service of its set
	unfinished   map[*update]struct{}        // the same updates, once each
	byID         map[string]*update          // every update kept
	restoredPins map[graph.ServiceID]map[string]graph.VersionID
	woke         wakeup // signalled by activate: the progress check has work
}

func newUpdateTable() *updateTable {
	return &updateTable{
		byService:    make(map[graph.ServiceID]*update),
		unfinished:   make(map[*update]struct{}),
		byID:         make(map[string]*update),
		restoredPins: make(map[graph.ServiceID]map[string]graph.VersionID),
	}
}

// Reads: the caller holds the event lock (or mu).

// active returns the unfinished update of a service, or nil.
func (t *updateTable) active(svc graph.ServiceID) *update { return t.byService[svc] }

// anyActive says whether any update is unfinished.
func (t *updateTable) anyActive() bool { return len(t.unfinished) > 0 }

// actives ranges over the unfinished updates.
func (t *updateTable) actives() iter.Seq[*update] {
	return func(yield func(*update) bool) {
		for u := range t.unfinished {
			if !yield(u) {
				return
			}
		}
	}
}

// get returns an update by id, or nil.
func (t *updateTable) get(id string) *update { return t.byID[id] }

// all ranges over the updates kept.
func (t *updateTable) all() iter.Seq[*update] {
	return func(yield func(*update) bool) {
		for _, u := range t.byID {
			if !yield(u) {
				return
			}
		}
	}
}

// restoredPin returns the restored pin of txn at svc.
func (t *updateTable) restoredPin(svc graph.ServiceID, txn string) (graph.VersionID, bool) {
	v, ok := t.restoredPins[svc][txn]
	return v, ok
}

// markUsed marks the services of the unfinished updates, both their
// versions, and the versions restored pins name (forget.go).
func (t *updateTable) markUsed(service func(graph.ServiceID), version func(graph.VersionID)) {
	for u := range t.unfinished {
		for _, m := range u.members {
			service(m.svc)
			version(m.from)
			version(m.to)
		}
	}
	for _, m := range t.restoredPins {
		for _, v := range m {
			version(v)
		}
	}
}

// Changes: the caller holds the event lock; each takes mu.

// activate makes u the unfinished update of each service of its set (a
// reservation while it is pending).
func (t *updateTable) activate(u *update) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.unfinished[u] = struct{}{}
	for _, m := range u.members {
		t.byService[m.svc] = u
	}
	t.woke.signal()
}

// deactivate ends u, unfinished no more, and forgets the pins restored for
// its services.
func (t *updateTable) deactivate(u *update) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.unfinished, u)
	for _, m := range u.members {
		if t.byService[m.svc] == u {
			delete(t.byService, m.svc)
		}
		delete(t.restoredPins, m.svc)
	}
}

// keep records u in history.
func (t *updateTable) keep(u *update) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byID[u.rec.Id] = u
}

// forget drops updates from history.
func (t *updateTable) forget(ids []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range ids {
		delete(t.byID, id)
	}
}

// restorePin keeps a pin read from etcd.
func (t *updateTable) restorePin(svc graph.ServiceID, txn string, v graph.VersionID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.restoredPins[svc]
	if m == nil {
		m = make(map[string]graph.VersionID)
		t.restoredPins[svc] = m
	}
	m[txn] = v
}

// removeServices forgets the restored pins of removed services.
func (t *updateTable) removeServices(gone map[graph.ServiceID]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id := range gone {
		delete(t.restoredPins, id)
	}
}
