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
	}
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

// declare records declared edges; they are learned ones no longer.
func (k *catalog) declare(edges []edge) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, e := range edges {
		k.declared[e] = struct{}{}
		delete(k.learned, e)
	}
}

// learn records an edge learned from an undeclared call.
func (k *catalog) learn(e edge) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.learned[e] = struct{}{}
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
// removed from the graph.
func (k *catalog) removeServices(gone map[graph.ServiceID]bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for id := range gone {
		delete(k.routes, id)
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
}

// Reads without the event lock: take mu.

// routesShared returns a copy of the routes.
func (k *catalog) routesShared() map[graph.ServiceID]route {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make(map[graph.ServiceID]route, len(k.routes))
	for s, r := range k.routes {
		out[s] = r
	}
	return out
}
