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
	// byService indexes the live sessions by service: a service's
	// endpoints, and the sessions whose routing scope a service's callers
	// make (routing.go).
	byService map[graph.ServiceID]map[*session]struct{}
	// unsnapped are the live sessions that have not acknowledged the first
	// snapshot of their stream: until they do, they count for the prepare
	// handshake of every update (update.go). The event lock's alone.
	unsnapped map[*session]struct{}
	// byPeer counts the live sessions by session.peer (those with one):
	// the per-peer session quota.
	byPeer map[string]int
}

func newSessionTable() *sessionTable {
	return &sessionTable{
		byID:       make(map[string]*session),
		owners:     []*session{nil},
		departed:   make(map[graph.Owner]*departed),
		resyncWait: make(map[string]struct{}),
		byService:  make(map[graph.ServiceID]map[*session]struct{}),
		unsnapped:  make(map[*session]struct{}),
		byPeer:     make(map[string]int),
	}
}

// listLocked makes s its instance's live session; mu is held.
func (t *sessionTable) listLocked(s *session) {
	old := t.byID[s.rec.InstanceId]
	if old != nil && old != s {
		t.unindexLocked(old)
	}
	if old != s {
		t.countPeerLocked(s.peer, 1)
	}
	t.byID[s.rec.InstanceId] = s
	m := t.byService[s.svc]
	if m == nil {
		m = make(map[*session]struct{})
		t.byService[s.svc] = m
	}
	m[s] = struct{}{}
}

func (t *sessionTable) unindexLocked(s *session) {
	t.countPeerLocked(s.peer, -1)
	delete(t.unsnapped, s)
	if m := t.byService[s.svc]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(t.byService, s.svc)
		}
	}
}

// Reads: the caller holds the event lock (or mu).

// get returns the live session of an instance.
func (t *sessionTable) get(id string) *session { return t.byID[id] }

// current says whether s is the live session of its instance.
func (t *sessionTable) current(s *session) bool { return s != nil && t.byID[s.rec.InstanceId] == s }

// peerSessions is the number of live sessions registered from peer.
func (t *sessionTable) peerSessions(peer string) int { return t.byPeer[peer] }

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
	t.listLocked(s)
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
	t.listLocked(s)
}

// unlist takes s out of the live sessions; its owner slot stays.
func (t *sessionTable) unlist(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID[s.rec.InstanceId] == s {
		delete(t.byID, s.rec.InstanceId)
		t.unindexLocked(s)
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

// setPeer records where s registered from, moving its count when it is
// live.
func (t *sessionTable) setPeer(s *session, peer string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.peer == peer {
		return
	}
	if t.byID[s.rec.InstanceId] == s {
		t.countPeerLocked(s.peer, -1)
		t.countPeerLocked(peer, 1)
	}
	s.peer = peer
}

// countPeerLocked adds d to peer's count ("" is not counted); mu is held.
func (t *sessionTable) countPeerLocked(peer string, d int) {
	if peer == "" {
		return
	}
	if t.byPeer[peer] += d; t.byPeer[peer] <= 0 {
		delete(t.byPeer, peer)
	}
}

// setRecord replaces a live session's record (same service and version).
func (t *sessionTable) setRecord(s *session, rec *pb.SessionRecord) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s.rec = rec
}

// awaitSnapshot marks s as not having applied its stream's first
// snapshot yet (the event lock is enough: only it reads this).
func (t *sessionTable) awaitSnapshot(s *session) { t.unsnapped[s] = struct{}{} }

// snapshotApplied says s has applied it.
func (t *sessionTable) snapshotApplied(s *session) { delete(t.unsnapped, s) }

// ofService ranges over the live sessions of a service.
func (t *sessionTable) ofService(svc graph.ServiceID) iter.Seq[*session] {
	return func(yield func(*session) bool) {
		for s := range t.byService[svc] {
			if !yield(s) {
				return
			}
		}
	}
}

// awaitingSnapshot ranges over the sessions marked by awaitSnapshot.
func (t *sessionTable) awaitingSnapshot() iter.Seq[*session] {
	return func(yield func(*session) bool) {
		for s := range t.unsnapped {
			if !yield(s) {
				return
			}
		}
	}
}

// Reads without the event lock: take mu.

// endpointsShared returns the endpoints of a service's live sessions, and
// the service's name ("" if it has none).
func (t *sessionTable) endpointsShared(svc graph.ServiceID) (string, []*pb.Endpoint) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var name string
	eps := make([]*pb.Endpoint, 0, len(t.byService[svc]))
	for s := range t.byService[svc] {
		name = s.rec.Service
		eps = append(eps, &pb.Endpoint{InstanceId: s.rec.InstanceId, Version: s.rec.Version, Address: s.rec.Address})
	}
	return name, eps
}

// servicesShared returns the services that have live sessions.
func (t *sessionTable) servicesShared() []graph.ServiceID {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]graph.ServiceID, 0, len(t.byService))
	for svc, m := range t.byService {
		if len(m) > 0 {
			out = append(out, svc)
		}
	}
	return out
}

// lenShared is len for a caller without the event lock.
func (t *sessionTable) lenShared() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byID)
}

// serviceShared returns the live sessions of a service, each with the
// stream it is attached to (nil: disconnected), read together.
func (t *sessionTable) serviceShared(svc graph.ServiceID) []attached {
	t.mu.RLock()
	defer t.mu.RUnlock()
	m := t.byService[svc]
	out := make([]attached, 0, len(m))
	for s := range m {
		out = append(out, attached{s: s, st: s.stream})
	}
	return out
}

// currentShared is current for a caller without the event lock.
func (t *sessionTable) currentShared(s *session) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.current(s)
}

// attachedShared returns s's stream if s is still its instance's live
// session (nil otherwise, or if it is disconnected).
func (t *sessionTable) attachedShared(s *session) *stream {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.byID[s.rec.InstanceId] != s {
		return nil
	}
	return s.stream
}

// attached is a session and its stream as read together.
type attached struct {
	s  *session
	st *stream
}
