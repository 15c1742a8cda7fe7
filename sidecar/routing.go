package sidecar

import (
	"fmt"
	"sync/atomic"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// table is an applied routing table, indexed for the call path. It is
// immutable once stored, except for the round-robin counters.
type table struct {
	rev      uint64
	services map[string]*route
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

func newTable(r *pb.Routing) *table {
	t := &table{rev: r.GetRevision(), services: make(map[string]*route, len(r.GetServices()))}
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
func (c *Client) applyRouting(r *pb.Routing) {
	t := newTable(r)
	c.mu.Lock()
	c.routing.Store(t)
	c.queue = append(c.queue, item{ack: t.rev})
	c.urgent = true
	c.mu.Unlock()
	c.wake()
	c.lg.Debug("routing table applied", "revision", t.rev, "services", len(t.services))
	c.markReady(nil)
}

// markReady ends Start's wait, with err if the client gives up.
func (c *Client) markReady(err error) {
	c.readyOnce.Do(func() {
		c.startErr = err
		close(c.ready)
	})
}
