package sidecar

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// table is an applied routing table, indexed for the call path: the
// routes of the services in this client's scope (those its service may
// call). It is immutable once stored, except for the round-robin
// counters.
type table struct {
	rev      uint64
	services map[string]*route
	lanes    laneIndex     // lane.go
	changed  chan struct{} // closed when a newer table replaces this one
}

// route says where calls to one service go.
type route struct {
	service        string
	defaultVersion string
	updateMode     bool
	versions       map[string]*endpoints
}

// endpoints are the addresses of one version, picked round-robin.
type endpoints struct {
	addrs []string
	next  atomic.Uint64
}

// newTable builds the table a Routing makes of the current one, cur (nil
// before the first): a snapshot replaces it; a delta replaces the routes
// it names and removes those it lists.
func newTable(cur *table, r *pb.Routing) *table {
	t := &table{rev: r.GetRevision(), changed: make(chan struct{})}
	if !r.GetDelta() || r.GetLanesChanged() || cur == nil {
		t.lanes = newLaneIndex(newLaneDefs(r.GetLanes()))
	} else {
		t.lanes = cur.lanes
	}
	if r.GetDelta() && cur != nil {
		t.services = make(map[string]*route, len(cur.services)+len(r.GetServices()))
		for n, rt := range cur.services {
			t.services[n] = rt
		}
		for _, n := range r.GetRemoved() {
			delete(t.services, n)
		}
	} else {
		t.services = make(map[string]*route, len(r.GetServices()))
	}
	for _, s := range r.GetServices() {
		rt := &route{
			service:        s.GetService(),
			defaultVersion: s.GetDefaultVersion(),
			updateMode:     s.GetUpdateMode(),
			versions:       make(map[string]*endpoints),
		}
		for _, e := range s.GetEndpoints() {
			eps := rt.versions[e.GetVersion()]
			if eps == nil {
				eps = &endpoints{}
				rt.versions[e.GetVersion()] = eps
			}
			eps.addrs = append(eps.addrs, e.GetAddress())
		}
		t.services[rt.service] = rt
	}
	return t
}

// lookup returns the route of service, nil if the table (which may be nil:
// none received yet) does not know it.
func (t *table) lookup(service string) *route {
	if t == nil {
		return nil
	}
	return t.services[service]
}

// pick returns the next endpoint of version, round-robin.
func (r *route) pick(version string) (string, error) {
	var eps *endpoints
	if r != nil {
		eps = r.versions[version]
	}
	if eps == nil || len(eps.addrs) == 0 {
		return "", fmt.Errorf("%w: %s", ErrNoEndpoint, version)
	}
	return eps.addrs[(eps.next.Add(1)-1)%uint64(len(eps.addrs))], nil
}

// applyRouting installs a table and queues its RoutingAck behind every
// event queued so far. Route checks, under c.mu, that the table it routed
// by is still current when it queues its CALL; so every CALL routed by an
// older table is queued before the ack, and every later one sees this
// table (and waits for a decision if it puts the callee in update mode).
//
// The first Routing of a stream is a snapshot of the scope; the next ones
// are deltas. A revision older than the table's is ignored (a delta of an
// earlier stream's coordinator cannot follow a newer snapshot on the same
// stream, but a snapshot may repeat the current revision: a resync).
func (c *Client) applyRouting(r *pb.Routing) {
	c.mu.Lock()
	cur := c.routing.Load()
	if r.GetDelta() && cur == nil {
		c.mu.Unlock()
		c.lg.Warn("routing delta before any snapshot ignored", "revision", r.GetRevision())
		return
	}
	t := newTable(cur, r)
	for n := range t.services {
		delete(c.unknown, n)
	}
	c.routing.Store(t)
	if cur != nil {
		close(cur.changed)
	}
	c.queue = append(c.queue, item{ack: t.rev})
	c.urgent = true
	c.mu.Unlock()
	c.wake()
	c.lg.Debug("routing table applied", "revision", t.rev, "services", len(t.services))
	c.markReady(nil)
}

// waitRoute waits, until ctx ends, for a table with an endpoint of
// service@version, and picks one. A call decided by the coordinator may
// come before the route of its service (a call outside the scope: the
// route follows as a delta).
func (c *Client) waitRoute(ctx context.Context, service, version string) (string, error) {
	for {
		t := c.routing.Load()
		addr, err := t.lookup(service).pick(version)
		if err == nil || t == nil {
			return addr, err
		}
		select {
		case <-t.changed:
		case <-ctx.Done():
			return "", fmt.Errorf("route to %s: %w (waited for its route: %w)", service, err, ctx.Err())
		case <-c.stop:
			return "", ErrClosed
		}
	}
}

// unknownFor is how long a service the coordinator said it does not know
// (an external host) is sent out untouched without asking again.
const unknownFor = time.Second

// knownUnknown says whether service was found not to be a service of the
// mesh less than unknownFor ago.
func (c *Client) knownUnknown(service string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.unknown[service]
	if ok && time.Since(at) >= unknownFor {
		delete(c.unknown, service)
		return false
	}
	return ok
}

// markReady ends Start's wait, with err if the client gives up.
func (c *Client) markReady(err error) {
	c.readyOnce.Do(func() {
		c.startErr = err
		close(c.ready)
	})
}
