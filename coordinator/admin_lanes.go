package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// The operators' lane requests (DESIGN.md §4.9; lanes.go). Each change
// takes the lane table's write lock, checks under the event lock, stores
// the lane without it, then applies it and marks the lanes changed for
// the routing publisher, which sends the whole list to every stream.

func (a admin) CreateLane(ctx context.Context, req *pb.CreateLaneRequest) (*pb.Lane, error) {
	c := a.c
	l, err := normalizeLane(req.GetLane())
	if err != nil {
		return nil, err
	}
	c.lanes.wmu.Lock()
	defer c.lanes.wmu.Unlock()
	c.mu.Lock()
	err = c.checkLaneMembersLocked(l)
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if _, ok := c.lanes.get(l.Name); ok {
		return nil, fmt.Errorf("%w: lane %s (delete it first to change it)", ErrLaneExists, l.Name)
	}
	if other := c.lanes.laneConflict(l); other != "" {
		return nil, fmt.Errorf("%w: lane %s is selected by %s: %s already", ErrLaneExists, other, l.Header, l.Tag)
	}
	if n := c.lanes.len(); n >= c.cfg.MaxLanes {
		return nil, fmt.Errorf("%w: %d lanes exist, the limit is %d (--max-lanes)", ErrTooManyLanes, n, c.cfg.MaxLanes)
	}
	if err := c.commit(ctx, storage.PutLane(l)); err != nil {
		return nil, fmt.Errorf("%w: store lane %s: %w", ErrUnavailable, l.Name, err)
	}
	c.applyLane(l, false)
	c.lg.Info("lane created", "lane", l.Name, "members", laneMembers(l), "header", l.Header, "tag", l.Tag)
	return proto.Clone(l).(*pb.Lane), nil
}

func (a admin) ListLanes(context.Context, *pb.ListLanesRequest) (*pb.ListLanesResponse, error) {
	out := &pb.ListLanesResponse{}
	for _, l := range a.c.lanes.list() {
		out.Lanes = append(out.Lanes, proto.Clone(l).(*pb.Lane))
	}
	return out, nil
}

func (a admin) DeleteLane(ctx context.Context, req *pb.DeleteLaneRequest) (*pb.Lane, error) {
	c := a.c
	c.lanes.wmu.Lock()
	defer c.lanes.wmu.Unlock()
	l, err := c.lanes.idle(req.GetName())
	if errors.Is(err, ErrLanePromoting) {
		return nil, fmt.Errorf("%w (abort it first)", err)
	} else if err != nil {
		return nil, err
	}
	if err := c.commit(ctx, storage.DeleteLane(l.Name)); err != nil {
		return nil, fmt.Errorf("%w: delete lane %s: %w", ErrUnavailable, l.Name, err)
	}
	c.applyLane(l, true)
	c.lg.Info("lane deleted", "lane", l.Name)
	return l, nil
}

// PromoteLane starts one set update of the lane's members that do not run
// their lane version by default already, to it; the lane record names the
// update, written in the same etcd transaction as the update's record, so
// that a new leader knows to delete the lane once the update is DONE.
func (a admin) PromoteLane(ctx context.Context, req *pb.PromoteLaneRequest) (*pb.Update, error) {
	c := a.c
	c.lanes.wmu.Lock()
	defer c.lanes.wmu.Unlock()
	l, err := c.lanes.idle(req.GetName())
	if err != nil {
		return nil, err
	}
	var members []*pb.ServiceVersion
	c.mu.Lock()
	for _, m := range l.Members {
		svc, ok := c.eng.LookupService(m.Service)
		if ok && c.cat.routed(svc) && c.eng.VersionName(c.cat.defaultVersion(svc)) == m.Version {
			continue
		}
		members = append(members, proto.Clone(m).(*pb.ServiceVersion))
	}
	c.mu.Unlock()
	if len(members) == 0 {
		return nil, fmt.Errorf("lane %s: every member %w its lane version by default: delete the lane", l.Name, ErrAlreadyAtVersion)
	}
	promoted := proto.Clone(l).(*pb.Lane)
	u, err := c.orch.startUpdateWith(ctx, &pb.StartUpdateRequest{Members: members, Strategy: req.GetStrategy(),
		Timeout: req.GetTimeout(), MaxBlock: req.GetMaxBlock(), PrepareTimeout: req.GetPrepareTimeout()},
		func(id string) []storage.Op {
			promoted.Promotion = id
			return []storage.Op{storage.PutLane(promoted)}
		})
	if err != nil {
		return nil, fmt.Errorf("promote lane %s: %w", l.Name, err)
	}
	c.applyLane(promoted, false)
	c.lg.Info("lane promotion started", "lane", l.Name, "update", u.Id)
	c.lanes.wake() // it may have finished already (NAIVE)
	return u, nil
}

// applyLane applies a stored lane (or its deletion) and marks the lanes
// changed for the routing publisher.
func (c *Coordinator) applyLane(l *pb.Lane, deleted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if deleted {
		c.lanes.delete(l.Name)
	} else {
		c.lanes.put(l)
	}
	c.routing.lanesChanged()
}

// runLaneSettle settles the lanes being promoted each time an update ends
// (and once at start: a new leader may find a promotion's update ended).
func (c *Coordinator) runLaneSettle() {
	c.settleLanes()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.lanes.kick:
			c.settleLanes()
		}
	}
}

// settleLanes deletes each lane whose promotion is DONE, and forgets the
// promotion of a lane whose update ended otherwise (aborted, failed, or
// no longer known): the lane stays.
func (c *Coordinator) settleLanes() {
	c.lanes.wmu.Lock()
	defer c.lanes.wmu.Unlock()
	for _, l := range c.lanes.promoting() {
		c.mu.Lock()
		u := c.orch.upd.get(l.Promotion)
		ended, done := u == nil, false
		if u != nil {
			ended, done = u.finished(), u.rec.Phase == pb.Phase_PHASE_DONE
		}
		c.mu.Unlock()
		if !ended {
			continue
		}
		ctx, cancel := context.WithTimeout(c.ctx, laneStoreTimeout)
		var err error
		kept := proto.Clone(l).(*pb.Lane)
		kept.Promotion = ""
		if done {
			err = c.commit(ctx, storage.DeleteLane(l.Name))
		} else {
			err = c.commit(ctx, storage.PutLane(kept))
		}
		cancel()
		if err != nil {
			c.lg.Warn("lane promotion: could not store its end; retried at the next update's end or leader", "lane", l.Name, "update", l.Promotion, "err", err)
			continue
		}
		if done {
			c.applyLane(l, true)
			c.lg.Info("lane promoted and deleted", "lane", l.Name, "update", l.Promotion)
		} else {
			c.applyLane(kept, false)
			c.lg.Info("lane promotion ended without DONE; lane kept", "lane", l.Name, "update", l.Promotion)
		}
	}
}

// laneStoreTimeout bounds settleLanes' write of one lane.
const laneStoreTimeout = 5 * time.Second

// laneMembers is "auth=v2,proc=v2".
func laneMembers(l *pb.Lane) string {
	s := ""
	for i, m := range l.Members {
		if i > 0 {
			s += ","
		}
		s += m.Service + "=" + m.Version
	}
	return s
}

func (s adminServer) CreateLane(ctx context.Context, r *pb.CreateLaneRequest) (*pb.Lane, error) {
	return answer(s.a.CreateLane(ctx, r))
}

func (s adminServer) ListLanes(ctx context.Context, r *pb.ListLanesRequest) (*pb.ListLanesResponse, error) {
	return answer(s.a.ListLanes(ctx, r))
}

func (s adminServer) DeleteLane(ctx context.Context, r *pb.DeleteLaneRequest) (*pb.Lane, error) {
	return answer(s.a.DeleteLane(ctx, r))
}

func (s adminServer) PromoteLane(ctx context.Context, r *pb.PromoteLaneRequest) (*pb.Update, error) {
	return answer(s.a.PromoteLane(ctx, r))
}
