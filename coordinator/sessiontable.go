package coordinator

import (
	"iter"
	"sync"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// sessionTable owns the sidecar sessions: by instance id, by owner slot
// (graph.Owner, the engine's tag for who owns a root transaction), the
// slots free for reuse, the deregistered sessions whose slots stay for the
// transactions they own (deregister.go), and the sessions restored from
// etcd that have not resynced yet.
//
// Locking: every change is made with both the event lock (Coordinator.mu:
// a session's slot goes with the engine's transactions) and the table's
// own mu held, so a reader holding either sees a consistent table. Event
// application reads under the event lock without taking mu; the routing
// publisher, admin reads, metrics and health take only mu (read). mu is a
// leaf: nothing is taken under it. The same rule covers the session fields
// those readers use (rec, stream); the others (ackedRev, expired, quota,
// lease, ttl) are the event lock's alone.
type sessionTable struct {
	mu         sync.RWMutex
	byID       map[string]*session
	owners     []*session // by graph.Owner; owners[0] is always nil
	free       []graph.Owner
	departed   map[graph.Owner]*departed
	resyncWait map[string]struct{}
}

func newSessionTable() *sessionTable {
	return &sessionTable{
		byID:       make(map[string]*session),
		owners:     []*session{nil},
		departed:   make(map[graph.Owner]*departed),
		resyncWait: make(map[string]struct{}),
	}
}

// Reads: the caller holds the event lock (or mu).

// get returns the live session of an instance.
func (t *sessionTable) get(id string) *session { return t.byID[id] }

// current says whether s is the live session of its instance.
func (t *sessionTable) current(s *session) bool { return s != nil && t.byID[s.rec.InstanceId] == s }

// len is the number of live sessions.
func (t *sessionTable) len() int { return len(t.byID) }

// all ranges over the live sessions.
func (t *sessionTable) all() iter.Seq[*session] {
	return func(yield func(*session) bool) {
		for _, s := range t.byID {
			if !yield(s) {
				return
			}
		}
	}
}

// owner returns the session behind an owner tag, expired or not.
func (t *sessionTable) owner(o graph.Owner) *session {
	if int(o) >= len(t.owners) {
		return nil
	}
	return t.owners[o]
}

// liveOwner returns the live session behind an owner tag: nil for an
// expired session kept by self-preservation (it has no lease to attach a
// record or pin to).
func (t *sessionTable) liveOwner(o graph.Owner) *session {
	if s := t.owner(o); s != nil && !s.expired {
		return s
	}
	return nil
}

// awaitingResync says whether the instance was restored and has not
// registered since.
func (t *sessionTable) awaitingResync(id string) bool {
	_, ok := t.resyncWait[id]
	return ok
}

// resyncPending is the number of restored sessions not yet resynced.
func (t *sessionTable) resyncPending() int { return len(t.resyncWait) }

// resyncPendingIDs ranges over them.
func (t *sessionTable) resyncPendingIDs() iter.Seq[string] {
	return func(yield func(string) bool) {
		for id := range t.resyncWait {
			if !yield(id) {
				return
			}
		}
	}
}

// departures ranges over the departed sessions by owner slot.
func (t *sessionTable) departures() iter.Seq2[graph.Owner, *departed] {
	return func(yield func(graph.Owner, *departed) bool) {
		for o, d := range t.departed {
			if !yield(o, d) {
				return
			}
		}
	}
}

// markUsed marks the services and versions of the live and departed
// sessions (forget.go).
func (t *sessionTable) markUsed(service func(graph.ServiceID), version func(graph.VersionID)) {
	for _, s := range t.byID {
		service(s.svc)
		version(s.ver)
	}
	for _, d := range t.departed {
		service(d.s.svc)
		version(d.s.ver)
	}
}

// Changes: the caller holds the event lock; each takes mu.

// add installs s as its instance's live session under a fresh owner slot.
func (t *sessionTable) add(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.allocOwner(s)
	t.byID[s.rec.InstanceId] = s
}

// addExpired gives an expired session (restored queued by
// self-preservation) an owner slot, and no place among the live ones.
func (t *sessionTable) addExpired(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.allocOwner(s)
}

func (t *sessionTable) allocOwner(s *session) {
	if n := len(t.free); n > 0 {
		s.owner = t.free[n-1]
		t.free = t.free[:n-1]
		t.owners[s.owner] = s
	} else {
		s.owner = graph.Owner(len(t.owners))
		t.owners = append(t.owners, s)
	}
}

// adopt installs s as its instance's live session in the owner slot it
// carries (an expired session's, taken back).
func (t *sessionTable) adopt(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.owners[s.owner] = s
	t.byID[s.rec.InstanceId] = s
}

// unlist takes s out of the live sessions; its owner slot stays.
func (t *sessionTable) unlist(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[s.rec.InstanceId] == s {
		delete(t.byID, s.rec.InstanceId)
	}
}

// freeOwner frees an owner slot for reuse.
func (t *sessionTable) freeOwner(o graph.Owner) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.owners[o] = nil
	t.free = append(t.free, o)
}

// depart keeps a deregistered session's owner slot until d.until.
func (t *sessionTable) depart(o graph.Owner, d *departed) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.departed[o] = d
}

// endDeparture forgets a departed session and frees its slot.
func (t *sessionTable) endDeparture(o graph.Owner) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.departed, o)
	t.owners[o] = nil
	t.free = append(t.free, o)
}

// awaitResync marks a restored session as awaiting its registration.
func (t *sessionTable) awaitResync(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.resyncWait[id] = struct{}{}
}

// resynced says the instance registered (or expired, or left): it is
// awaited no more. It returns whether it was awaited.
func (t *sessionTable) resynced(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.resyncWait[id]
	delete(t.resyncWait, id)
	return ok
}

// attach sets the stream a session is attached to (nil: disconnected).
func (t *sessionTable) attach(s *session, st *stream) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s.stream = st
}

// setRecord replaces a live session's record (same service and version).
func (t *sessionTable) setRecord(s *session, rec *pb.SessionRecord) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s.rec = rec
}

// Reads without the event lock: take mu.

// lenShared is len for a caller without the event lock.
func (t *sessionTable) lenShared() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byID)
}

// eachShared is each for a caller without the event lock; fn must not
// take the event lock.
func (t *sessionTable) eachShared(fn func(*session) bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for s := range t.all() {
		if !fn(s) {
			return
		}
	}
}
