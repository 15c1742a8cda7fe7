package coordinator

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The routing table tells sidecars, per service, the default version, the
// live endpoints and whether the service is in update mode. Every change
// makes a new revision; the routing publisher sends the newest table to
// every connected stream, and a session's RoutingAck says which revision it
// has applied (and, by stream order, that every event it sent before was
// applied here first).

// routingPublisher owns the routing revision, which services are in update
// mode as published, and the goroutine that builds and sends tables. It
// builds them from the catalog's routes and the session table's endpoints
// under their own locks, never the event lock: event application only
// bumps the revision after a change.
//
// A revision is read before the state it covers, and every change is made
// before its bump, so a table carries at least what its revision says (a
// sidecar acknowledging revision r has seen every change bumped at r or
// before). Its mu (update modes) is a leaf.
type routingPublisher struct {
	rev  atomic.Uint64
	kick chan struct{}

	mu         sync.Mutex
	updateMode map[graph.ServiceID]bool

	routes    routeSource
	endpoints endpointSource
}

// routeSource gives the default version of every service with a route.
type routeSource interface {
	routesShared() map[graph.ServiceID]route
}

// endpointSource walks the live sessions without the event lock.
type endpointSource interface {
	eachShared(fn func(*session) bool)
}

func newRoutingPublisher(routes routeSource, endpoints endpointSource) *routingPublisher {
	return &routingPublisher{
		kick:       make(chan struct{}, 1),
		updateMode: make(map[graph.ServiceID]bool),
		routes:     routes,
		endpoints:  endpoints,
	}
}

// bump makes a new revision, for changes already made, and wakes the
// sending goroutine.
func (p *routingPublisher) bump() uint64 {
	rev := p.rev.Add(1)
	select {
	case p.kick <- struct{}{}:
	default:
	}
	return rev
}

// revision is the newest revision.
func (p *routingPublisher) revision() uint64 { return p.rev.Load() }

// setUpdateMode publishes whether svc is in update mode (from the next bump).
func (p *routingPublisher) setUpdateMode(svc graph.ServiceID, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.updateMode[svc] = true
	} else {
		delete(p.updateMode, svc)
	}
}

// table builds the table at the current revision, and lists the streams
// to send it to.
func (p *routingPublisher) table() (*pb.Routing, []*stream) {
	out := &pb.Routing{Revision: p.rev.Load()}
	routes := p.routes.routesShared()
	p.mu.Lock()
	inUpdate := make(map[graph.ServiceID]bool, len(p.updateMode))
	for s := range p.updateMode {
		inUpdate[s] = true
	}
	p.mu.Unlock()
	byService := make(map[string]*pb.ServiceRoute, len(routes))
	for s, r := range routes {
		byService[r.service] = &pb.ServiceRoute{Service: r.service, DefaultVersion: r.name, UpdateMode: inUpdate[s]}
	}
	var targets []*stream
	p.endpoints.eachShared(func(s *session) bool {
		r := byService[s.rec.Service]
		if r == nil {
			// Registered, its route not stored yet: no default version.
			r = &pb.ServiceRoute{Service: s.rec.Service, UpdateMode: inUpdate[s.svc]}
			byService[s.rec.Service] = r
		}
		r.Endpoints = append(r.Endpoints, &pb.Endpoint{InstanceId: s.rec.InstanceId, Version: s.rec.Version, Address: s.rec.Address})
		if s.stream != nil {
			targets = append(targets, s.stream)
		}
		return true
	})
	for _, r := range byService {
		slices.SortFunc(r.Endpoints, func(a, b *pb.Endpoint) int { return strings.Compare(a.InstanceId, b.InstanceId) })
		out.Services = append(out.Services, r)
	}
	slices.SortFunc(out.Services, func(a, b *pb.ServiceRoute) int { return strings.Compare(a.Service, b.Service) })
	return out, targets
}

// bumpRoutingLocked makes a new routing revision and wakes the publisher.
func (c *Coordinator) bumpRoutingLocked() uint64 { return c.routing.bump() }

// broadcastRouting sends the newest table to every connected stream each
// time the revision moves; bursts of changes coalesce into one send.
func (c *Coordinator) broadcastRouting() {
	defer c.streams.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.routing.kick:
		}
		table, targets := c.routing.table()
		msg := &pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_Routing{Routing: table}}
		for _, st := range targets {
			if err := st.sendRouting(table.Revision, msg); err != nil {
				c.lg.Debug("send routing", "revision", table.Revision, "error", err)
			}
		}
	}
}

// sendRoutingTo sends the current table to one stream (after Registered).
func (c *Coordinator) sendRoutingTo(st *stream) error {
	table, _ := c.routing.table()
	return st.sendRouting(table.Revision, &pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_Routing{Routing: table}})
}

// routingAck records that a session applied a revision.
func (c *Coordinator) routingAck(s *session, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.sess.current(s) || rev > c.routing.revision() {
		return
	}
	s.ackedRev = max(s.ackedRev, rev)
	c.orch.progressLocked()
}
