package coordinator

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Routing is scoped and incremental (DESIGN.md §4.1). A session's scope
// is what its service may call: the callees of its service among the
// static edges, declared and learned (catalog.callees). A stream gets a
// snapshot of its scope after Registered, then deltas: the new
// ServiceRoute of each service of its scope that changed (the granularity
// is the service: default version, update mode and endpoints are sent
// together), and the services that left its scope. A call to a service
// outside the scope is a waiting CALL: the coordinator decides it, learns
// the edge (stream.go callLocked), which widens the scope, and the route
// follows as a delta.
//
// Every change makes a new revision; a session's RoutingAck says which
// revision it has applied: it has then applied every change to its scope
// made at or before it (and, by stream order, every event it sent before
// was applied here first).

// routingPublisher owns the routing revision, which services are in update
// mode as published, what changed since the last round (the dirty set),
// and the goroutine that builds and sends snapshots and deltas. It builds
// them from the catalog and the session table under their own locks,
// never the event lock: event application only marks what changed.
//
// A change is made first, then marked; marking it and making its revision
// are one step under mu, and a round takes the dirty set and reads the
// revision in one step under mu too, then reads the state. So a round's
// revision covers exactly the changes in its dirty set (and those of the
// rounds before), and the state it sends is at least as new: a sidecar
// acknowledging revision r has seen every change to its scope marked at r
// or before. Its mu is a leaf.
type routingPublisher struct {
	rev  atomic.Uint64 // written under mu
	kick chan struct{}

	mu         sync.Mutex
	updateMode map[graph.ServiceID]bool
	dirty      routingDirty

	cat  *catalog
	sess *sessionTable
	// lanes reads the lanes (laneTable.list): every routing message
	// carries them whole when they changed, and every snapshot.
	lanes func() []*pb.Lane
}

// routingDirty is what changed since the last round.
type routingDirty struct {
	// services whose route, update mode or endpoints changed, with their
	// names (for a removal: the service may be gone when the round runs).
	services map[graph.ServiceID]string
	// widened: new edges; the callee joins the caller's sessions' scope.
	widened []edge
	// narrowed: edges removed with their callee; the name leaves the
	// caller's sessions' scope.
	narrowed []namedEdge
	// snapshots: sessions to send their whole scope to (a registration,
	// or a slow stream resynced).
	snapshots map[*session]struct{}
	// lanes: the lanes changed; every stream gets them.
	lanes bool
}

type namedEdge struct {
	edge
	name string // of e.to
}

func newRoutingPublisher(cat *catalog, sess *sessionTable) *routingPublisher {
	return &routingPublisher{
		kick:       make(chan struct{}, 1),
		updateMode: make(map[graph.ServiceID]bool),
		cat:        cat,
		sess:       sess,
	}
}

// bumpLocked makes a new revision for the changes just marked and wakes
// the publisher; mu is held.
func (p *routingPublisher) bumpLocked() uint64 {
	rev := p.rev.Add(1)
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return rev
}

// revision is the newest revision.
func (p *routingPublisher) revision() uint64 { return p.rev.Load() }

// Marks: the caller holds the event lock, and has made the change.

// changed marks a service's route, update mode or endpoints as changed.
func (p *routingPublisher) changed(svc graph.ServiceID, name string) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.markLocked(svc, name)
	return p.bumpLocked()
}

func (p *routingPublisher) markLocked(svc graph.ServiceID, name string) {
	if p.dirty.services == nil {
		p.dirty.services = make(map[graph.ServiceID]string)
	}
	p.dirty.services[svc] = name
}

// setUpdateMode publishes whether svc is in update mode, and returns the
// revision that carries it.
func (p *routingPublisher) setUpdateMode(svc graph.ServiceID, name string, on bool) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.updateMode[svc] = true
	} else {
		delete(p.updateMode, svc)
	}
	p.markLocked(svc, name)
	return p.bumpLocked()
}

// widen marks new edges: each callee joins its caller's scope.
func (p *routingPublisher) widen(edges []edge) {
	if len(edges) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dirty.widened = append(p.dirty.widened, edges...)
	p.bumpLocked()
}

// narrow marks edges removed with their callee.
func (p *routingPublisher) narrow(edges []namedEdge) {
	if len(edges) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dirty.narrowed = append(p.dirty.narrowed, edges...)
	p.bumpLocked()
}

// lanesChanged marks the lanes as changed: every stream gets them whole.
func (p *routingPublisher) lanesChanged() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dirty.lanes = true
	return p.bumpLocked()
}

// snapshot asks for a snapshot of s's scope on its stream (a
// registration: a new stream), and returns the revision it covers at
// least.
func (p *routingPublisher) snapshot(s *session) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.snapshotLocked(s)
	return p.bumpLocked()
}

func (p *routingPublisher) snapshotLocked(s *session) {
	if p.dirty.snapshots == nil {
		p.dirty.snapshots = make(map[*session]struct{})
	}
	p.dirty.snapshots[s] = struct{}{}
}

// resync asks for a snapshot for a stream that dropped its pending deltas
// (routingSlot); nothing changed, so no new revision: the next round's
// covers what the deltas did.
func (p *routingPublisher) resync(ss []*session) {
	if len(ss) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range ss {
		p.snapshotLocked(s)
	}
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// inUpdate says whether svc is published in update mode.
func (p *routingPublisher) inUpdate(svc graph.ServiceID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.updateMode[svc]
}

// routingMsg is a snapshot or a delta for the sessions of one service (it
// is shared by them: the slots copy it before merging into it). routes are
// by service name; removed only in a delta.
type routingMsg struct {
	rev      uint64
	snapshot bool
	routes   map[string]*pb.ServiceRoute
	removed  map[string]struct{}
	// lanes, whole, if lanesSet (always in a snapshot).
	lanes    []*pb.Lane
	lanesSet bool
}

func newRoutingMsg(rev uint64, snapshot bool) *routingMsg {
	return &routingMsg{rev: rev, snapshot: snapshot, routes: make(map[string]*pb.ServiceRoute), removed: make(map[string]struct{})}
}

func (m *routingMsg) set(name string, r *pb.ServiceRoute) {
	m.routes[name] = r
	delete(m.removed, name)
}

func (m *routingMsg) remove(name string) {
	delete(m.routes, name)
	if !m.snapshot {
		m.removed[name] = struct{}{}
	}
}

// size is the number of services a delta names.
func (m *routingMsg) size() int { return len(m.routes) + len(m.removed) }

func (m *routingMsg) clone() *routingMsg {
	return &routingMsg{rev: m.rev, snapshot: m.snapshot, routes: maps.Clone(m.routes), removed: maps.Clone(m.removed),
		lanes: m.lanes, lanesSet: m.lanesSet}
}

// merge applies a newer delta onto m (last writer wins per service).
func (m *routingMsg) merge(d *routingMsg) {
	m.rev = d.rev
	for n := range d.removed {
		m.remove(n)
	}
	for n, r := range d.routes {
		m.set(n, r)
	}
	if d.lanesSet {
		m.lanes, m.lanesSet = d.lanes, true
	}
}

// proto is the message on the wire, services and removals sorted by name.
func (m *routingMsg) proto() *pb.Routing {
	out := &pb.Routing{Revision: m.rev, Delta: !m.snapshot, Lanes: m.lanes, LanesChanged: m.lanesSet}
	for _, n := range slices.Sorted(maps.Keys(m.routes)) {
		out.Services = append(out.Services, m.routes[n])
	}
	if !m.snapshot {
		out.Removed = slices.Sorted(maps.Keys(m.removed))
	}
	return out
}

// maxPendingDelta bounds the services a stream's pending delta may name;
// past it the stream is resynced with a snapshot instead.
const maxPendingDelta = 1024

// routingSlot is a stream's pending routing: at most one message, a
// snapshot or a delta, into which newer ones are merged (a snapshot
// replaces everything; deltas merge per service, last writer wins), so a
// stream that does not read holds one message of bounded size. Guarded by
// the stream's sendMu.
type routingSlot struct {
	haveSnap bool   // a snapshot was taken on this stream
	wantSnap bool   // pending deltas were dropped: only a snapshot is taken now
	lastRev  uint64 // newest revision taken
	pend     *routingMsg
	owned    bool // pend is the slot's own copy (may be merged into)
}

// offer takes m into the slot. It reports whether m is pending now
// (queued), and whether the stream must be resynced: its pending delta
// grew past maxPendingDelta and was dropped, so the publisher must send a
// snapshot (until then deltas are dropped too).
func (r *routingSlot) offer(m *routingMsg) (queued, resync bool) {
	if m.snapshot {
		if m.rev < r.lastRev || (r.haveSnap && !r.wantSnap && m.rev == r.lastRev && r.pend == nil) {
			return false, false // it covers no more than what was sent
		}
		r.pend, r.owned = m, false
		r.haveSnap, r.wantSnap, r.lastRev = true, false, m.rev
		return true, false
	}
	if !r.haveSnap || r.wantSnap || m.rev < r.lastRev {
		return false, false // a snapshot comes first, and covers it
	}
	r.lastRev = m.rev
	if r.pend == nil {
		r.pend, r.owned = m, false
		return true, false
	}
	if !r.owned {
		r.pend, r.owned = r.pend.clone(), true
	}
	r.pend.merge(m)
	if !r.pend.snapshot && r.pend.size() > maxPendingDelta {
		r.pend, r.owned, r.wantSnap = nil, false, true
		return false, true
	}
	return true, false
}

// take returns the pending message for the wire, nil if none.
func (r *routingSlot) take() *pb.Routing {
	if r.pend == nil {
		return nil
	}
	out := r.pend.proto()
	r.pend, r.owned = nil, false
	return out
}

// round takes the dirty set and sends what it changed: deltas to the
// sessions whose scope it touches, snapshots to those that asked.
func (p *routingPublisher) round() {
	p.mu.Lock()
	d := p.dirty
	p.dirty = routingDirty{}
	rev := p.rev.Load()
	p.mu.Unlock()

	built := make(map[graph.ServiceID]*pb.ServiceRoute)
	route := func(svc graph.ServiceID) *pb.ServiceRoute {
		if r, ok := built[svc]; ok {
			return r
		}
		r := p.buildRoute(svc)
		built[svc] = r
		return r
	}
	deltas := make(map[graph.ServiceID]*routingMsg) // by caller service
	delta := func(caller graph.ServiceID) *routingMsg {
		m := deltas[caller]
		if m == nil {
			m = newRoutingMsg(rev, false)
			deltas[caller] = m
		}
		return m
	}
	// Removals first: a service removed and registered again since is
	// added back below, as the state now says.
	for _, e := range d.narrowed {
		delta(e.from).remove(e.name)
	}
	for svc, name := range d.services {
		r := route(svc)
		for _, from := range p.cat.callersShared(svc) {
			if r == nil {
				delta(from).remove(name)
			} else {
				delta(from).set(r.Service, r)
			}
		}
	}
	for _, e := range d.widened {
		if r := route(e.to); r != nil && p.cat.hasEdgeShared(e.from, e.to) {
			delta(e.from).set(r.Service, r)
		}
	}
	var lanes []*pb.Lane
	if p.lanes != nil && (d.lanes || len(d.snapshots) > 0) {
		lanes = p.lanes()
	}
	if d.lanes {
		for _, svc := range p.sess.servicesShared() {
			m := delta(svc)
			m.lanes, m.lanesSet = lanes, true
		}
	}

	var resync []*session
	for from, m := range deltas {
		for _, a := range p.sess.serviceShared(from) {
			if a.st == nil {
				continue
			}
			if _, snap := d.snapshots[a.s]; snap {
				continue // its snapshot covers this
			}
			if a.st.offerRouting(m) {
				resync = append(resync, a.s)
			}
		}
	}
	snaps := make(map[graph.ServiceID]*routingMsg)
	for s := range d.snapshots {
		st := p.sess.attachedShared(s)
		if st == nil {
			continue
		}
		m := snaps[s.svc]
		if m == nil {
			m = newRoutingMsg(rev, true)
			m.lanes, m.lanesSet = lanes, true
			for _, to := range p.cat.calleesShared(s.svc) {
				if r := route(to); r != nil {
					m.set(r.Service, r)
				}
			}
			snaps[s.svc] = m
		}
		if st.offerRouting(m) {
			resync = append(resync, s)
		}
	}
	p.resync(resync)
}

// buildRoute builds a service's route as it is now: nil if it has neither
// a route nor a live session (it is not in any table).
func (p *routingPublisher) buildRoute(svc graph.ServiceID) *pb.ServiceRoute {
	rt, routed := p.cat.routeShared(svc)
	name, eps := p.sess.endpointsShared(svc)
	if !routed && len(eps) == 0 {
		return nil
	}
	out := &pb.ServiceRoute{Service: name, UpdateMode: p.inUpdate(svc), Endpoints: eps}
	if routed {
		// Registered, its route not stored yet: no default version.
		out.Service, out.DefaultVersion = rt.service, rt.name
	}
	slices.SortFunc(out.Endpoints, func(a, b *pb.Endpoint) int { return strings.Compare(a.InstanceId, b.InstanceId) })
	return out
}

// broadcastRouting runs a round each time the revision moves (or a
// resync is asked); bursts of changes coalesce into one round.
func (c *Coordinator) broadcastRouting() {
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.routing.kick:
		}
		c.routing.round()
	}
}

// routingAck records that a session applied a revision.
func (c *Coordinator) routingAck(s *session, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.sess.current(s) || rev > c.routing.revision() {
		return
	}
	s.ackedRev = max(s.ackedRev, rev)
	if s.ackedRev >= s.snapRev {
		c.sess.snapshotApplied(s)
	}
	c.orch.progressLocked()
}
