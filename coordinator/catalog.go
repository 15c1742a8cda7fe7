package coordinator

import (
	"iter"
	"sync"

	"github.com/coordinator/coordinator/coordinator/graph"
)

// catalog owns what the coordinator knows of services as a whole: the
// dependencies each declared (its persisted ServiceRecord), the static
// edges declared by registrations and those learned from undeclared calls,
// and each service's default version (its route).
//
// Locking, as for sessionTable: changes are made with both the event lock
// and the catalog's mu held; event application reads under the event lock
// alone, the routing publisher and admin reads under mu alone. mu is a
// leaf. The engine's edges are the caller's business (declare returns
// what to add).
type catalog struct {
	mu       sync.RWMutex
	deps     map[string][]string // by service name
	declared map[edge]struct{}
	learned  map[edge]struct{}
	routes   map[graph.ServiceID]route
	// callees and callers index the static edges, declared and learned:
	// a session's routing scope is its service's callees, and the
	// sessions whose scope holds a service are its callers' (routing.go).
	callees map[graph.ServiceID]map[graph.ServiceID]struct{}
	callers map[graph.ServiceID]map[graph.ServiceID]struct{}
}

type edge struct{ from, to graph.ServiceID }

// route is a service's default version, with the names the routing table
// shows (the engine's names are the event lock's).
type route struct {
	service string
	version graph.VersionID
	name    string // of version
}

func newCatalog() *catalog {
	return &catalog{
		deps:     make(map[string][]string),
		declared: make(map[edge]struct{}),
		learned:  make(map[edge]struct{}),
		routes:   make(map[graph.ServiceID]route),
		callees:  make(map[graph.ServiceID]map[graph.ServiceID]struct{}),
		callers:  make(map[graph.ServiceID]map[graph.ServiceID]struct{}),
	}
}

// indexLocked adds e to callees and callers; mu is held. It reports
// whether the edge is new.
func (k *catalog) indexLocked(e edge) bool {
	to := k.callees[e.from]
	if to == nil {
		to = make(map[graph.ServiceID]struct{})
		k.callees[e.from] = to
	}
	if _, ok := to[e.to]; ok {
		return false
	}
	to[e.to] = struct{}{}
	from := k.callers[e.to]
	if from == nil {
		from = make(map[graph.ServiceID]struct{})
		k.callers[e.to] = from
	}
	from[e.from] = struct{}{}
	return true
}

// Reads: the caller holds the event lock (or mu).

// defaultVersion is the service's route (0 if it has none).
func (k *catalog) defaultVersion(s graph.ServiceID) graph.VersionID { return k.routes[s].version }

// routed says whether the service has a route.
func (k *catalog) routed(s graph.ServiceID) bool {
	_, ok := k.routes[s]
	return ok
}

// dependencies returns the service's recorded dependencies, and whether it
// has a record at all.
func (k *catalog) dependencies(name string) ([]string, bool) {
	d, ok := k.deps[name]
	return d, ok
}

// recorded is the number of services with a record.
func (k *catalog) recorded() int { return len(k.deps) }

// records ranges over the service records: name and dependencies.
func (k *catalog) records() iter.Seq2[string, []string] {
	return func(yield func(string, []string) bool) {
		for n, d := range k.deps {
			if !yield(n, d) {
				return
			}
		}
	}
}

// markUsed marks every default version (forget.go); a service's record
// keeps it by name, which forgetting checks itself.
func (k *catalog) markUsed(_ func(graph.ServiceID), version func(graph.VersionID)) {
	for _, r := range k.routes {
		version(r.version)
	}
}

// isDeclared says whether a registration declared the edge.
func (k *catalog) isDeclared(e edge) bool {
	_, ok := k.declared[e]
	return ok
}

// learnedEdges is the number of edges learned and not declared since.
func (k *catalog) learnedEdges() int { return len(k.learned) }

// Changes: the caller holds the event lock; each takes mu.

// setRecord records a service's dependencies.
func (k *catalog) setRecord(name string, deps []string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.deps[name] = deps
}

// setRoute sets a service's default version.
func (k *catalog) setRoute(s graph.ServiceID, service string, v graph.VersionID, version string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.routes[s] = route{service: service, version: v, name: version}
}

// declare records declared edges; they are learned ones no longer. It
// returns the edges that are new (neither declared nor learned before):
// they widen their callers' routing scope.
func (k *catalog) declare(edges []edge) []edge {
	k.mu.Lock()
	defer k.mu.Unlock()
	var added []edge
	for _, e := range edges {
		k.declared[e] = struct{}{}
		delete(k.learned, e)
		if k.indexLocked(e) {
			added = append(added, e)
		}
	}
	return added
}

// learn records an edge learned from an undeclared call; it reports
// whether the edge is new.
func (k *catalog) learn(e edge) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.learned[e] = struct{}{}
	return k.indexLocked(e)
}

// hasEdge says whether from may call to (a declared or learned edge).
func (k *catalog) hasEdge(from, to graph.ServiceID) bool {
	_, ok := k.callees[from][to]
	return ok
}

// forgetRecord forgets a service's record and route (its records in etcd
// are gone).
func (k *catalog) forgetRecord(name string, id graph.ServiceID, hasID bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.deps, name)
	if hasID {
		delete(k.routes, id)
	}
}

// removeServices forgets what the catalog keeps by the ids of services
// removed from the graph. It returns the edges it removed whose caller
// stays: the callee leaves that caller's routing scope.
func (k *catalog) removeServices(gone map[graph.ServiceID]bool) []edge {
	k.mu.Lock()
	defer k.mu.Unlock()
	var narrowed []edge
	for id := range gone {
		delete(k.routes, id)
		for from := range k.callers[id] {
			if !gone[from] {
				narrowed = append(narrowed, edge{from, id})
			}
			delete(k.callees[from], id)
			if len(k.callees[from]) == 0 {
				delete(k.callees, from)
			}
		}
		delete(k.callers, id)
		for to := range k.callees[id] {
			delete(k.callers[to], id)
			if len(k.callers[to]) == 0 {
				delete(k.callers, to)
			}
		}
		delete(k.callees, id)
	}
	for e := range k.declared {
		if gone[e.from] || gone[e.to] {
			delete(k.declared, e)
		}
	}
	for e := range k.learned { // no longer count against MaxLearnedEdges
		if gone[e.from] || gone[e.to] {
			delete(k.learned, e)
		}
	}
	return narrowed
}

// Reads without the event lock: take mu.

// routeShared returns a service's route, if it has one.
func (k *catalog) routeShared(s graph.ServiceID) (route, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	r, ok := k.routes[s]
	return r, ok
}

// callersShared returns the services with an edge to s.
func (k *catalog) callersShared(s graph.ServiceID) []graph.ServiceID {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]graph.ServiceID, 0, len(k.callers[s]))
	for from := range k.callers[s] {
		out = append(out, from)
	}
	return out
}

// calleesShared returns the services s has an edge to: the routing scope
// of its sessions.
func (k *catalog) calleesShared(s graph.ServiceID) []graph.ServiceID {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]graph.ServiceID, 0, len(k.callees[s]))
	for to := range k.callees[s] {
		out = append(out, to)
	}
	return out
}

// hasEdgeShared is hasEdge for a caller without the event lock.
func (k *catalog) hasEdgeShared(from, to graph.ServiceID) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.hasEdge(from, to)
}

// callersOf ranges over the services with an edge to s; the caller holds
// the event lock (or mu).
func (k *catalog) callersOf(s graph.ServiceID) iter.Seq[graph.ServiceID] {
	return func(yield func(graph.ServiceID) bool) {
		for from := range k.callers[s] {
			if !yield(from) {
				return
			}
		}
	}
}
