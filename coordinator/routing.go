package coordinator

import (
	"slices"
	"strings"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The routing table tells sidecars, per service, the default version, the
// live endpoints and whether the service is in update mode. Every change
// makes a new revision; a broadcaster sends the newest table to every
// connected stream, and a session's RoutingAck says which revision it has
// applied (and, by stream order, that every event it sent before was
// applied here first).

// bumpRoutingLocked makes a new routing revision and wakes the broadcaster.
func (c *Coordinator) bumpRoutingLocked() uint64 {
	c.routingRev++
	select {
	case c.routingKick <- struct{}{}:
	default:
	}
	return c.routingRev
}

// routingLocked builds the table at the current revision.
func (c *Coordinator) routingLocked() *pb.Routing {
	byService := make(map[graph.ServiceID]*pb.ServiceRoute)
	route := func(s graph.ServiceID) *pb.ServiceRoute {
		r := byService[s]
		if r == nil {
			r = &pb.ServiceRoute{Service: c.eng.ServiceName(s), DefaultVersion: c.eng.VersionName(c.routes[s])}
			if u := c.active[s]; u != nil && u.updateMode {
				r.UpdateMode = true
			}
			byService[s] = r
		}
		return r
	}
	for s := range c.routes {
		route(s)
	}
	for _, s := range c.sessions {
		r := route(s.svc)
		r.Endpoints = append(r.Endpoints, &pb.Endpoint{InstanceId: s.rec.InstanceId, Version: s.rec.Version, Address: s.rec.Address})
	}
	out := &pb.Routing{Revision: c.routingRev}
	for _, r := range byService {
		slices.SortFunc(r.Endpoints, func(a, b *pb.Endpoint) int { return strings.Compare(a.InstanceId, b.InstanceId) })
		out.Services = append(out.Services, r)
	}
	slices.SortFunc(out.Services, func(a, b *pb.ServiceRoute) int { return strings.Compare(a.Service, b.Service) })
	return out
}

// broadcastRouting sends the newest table to every connected stream each
// time the revision moves; bursts of changes coalesce into one send.
func (c *Coordinator) broadcastRouting() {
	defer c.streams.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.routingKick:
		}
		c.mu.Lock()
		table := c.routingLocked()
		var targets []*stream
		for _, s := range c.sessions {
			if s.stream != nil {
				targets = append(targets, s.stream)
			}
		}
		c.mu.Unlock()
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
	c.mu.Lock()
	table := c.routingLocked()
	c.mu.Unlock()
	return st.sendRouting(table.Revision, &pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_Routing{Routing: table}})
}

// routingAck records that a session applied a revision.
func (c *Coordinator) routingAck(s *session, rev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sessions[s.rec.InstanceId] != s || rev > c.routingRev {
		return
	}
	s.ackedRev = max(s.ackedRev, rev)
	c.progressLocked()
}
