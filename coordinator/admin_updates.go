package coordinator

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

const (
	defaultUpdateLimit = 50
	maxUpdateLimit     = 1000
	// watchTick bounds how stale a watched update's progress may be.
	watchTick = 100 * time.Millisecond
)

func (a admin) StartUpdate(ctx context.Context, req *pb.StartUpdateRequest) (*pb.Update, error) {
	return a.c.orch.startUpdate(ctx, req)
}

func (o *orchestrator) updateLocked(id string) (*update, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: update id is empty", ErrInvalidArgument)
	}
	u := o.upd.get(id)
	if u == nil {
		return nil, fmt.Errorf("%w %q", ErrUnknownUpdate, id)
	}
	return u, nil
}

func (a admin) GetUpdate(ctx context.Context, req *pb.GetUpdateRequest) (*pb.Update, error) {
	c := a.c
	c.mu.Lock()
	defer c.mu.Unlock()
	u, err := c.orch.updateLocked(req.GetId())
	if err != nil {
		return nil, err
	}
	return c.orch.snapshotLocked(u), nil
}

func (a admin) ListUpdates(ctx context.Context, req *pb.ListUpdatesRequest) (*pb.ListUpdatesResponse, error) {
	n, err := limit(req.GetLimit(), defaultUpdateLimit, maxUpdateLimit, "limit")
	if err != nil {
		return nil, err
	}
	c := a.c
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []*update
	for u := range c.orch.upd.all() {
		if req.GetService() == "" || slices.ContainsFunc(recordMembers(u.rec), func(m *pb.UpdateMember) bool { return m.Service == req.Service }) {
			all = append(all, u)
		}
	}
	slices.SortFunc(all, func(x, y *update) int { // newest first
		return y.rec.CreatedAt.AsTime().Compare(x.rec.CreatedAt.AsTime())
	})
	out := &pb.ListUpdatesResponse{}
	for _, u := range all[:min(n, len(all))] {
		out.Updates = append(out.Updates, c.orch.snapshotLocked(u))
	}
	return out, nil
}

func (a admin) AbortUpdate(ctx context.Context, req *pb.AbortUpdateRequest) (*pb.Update, error) {
	reason := req.GetReason()
	if reason == "" {
		reason = "aborted by an operator"
	}
	return a.c.orch.abort(ctx, req.GetId(), reason)
}

// WatchUpdate sends the update at once, then whenever it changes (at most
// every watchTick for progress counters), and ends once it has finished.
func (a admin) WatchUpdate(req *pb.WatchUpdateRequest, srv pb.AdminService_WatchUpdateServer) error {
	c := a.c
	tick := time.NewTicker(watchTick)
	defer tick.Stop()
	var last *pb.Update
	for {
		c.mu.Lock()
		u, err := c.orch.updateLocked(req.GetId())
		if err != nil {
			c.mu.Unlock()
			return err
		}
		snap, changed, done := c.orch.snapshotLocked(u), u.changed, u.finished()
		c.mu.Unlock()
		if last == nil || !proto.Equal(last, snap) {
			if err := srv.Send(snap); err != nil {
				return err
			}
			last = snap
		}
		if done {
			return nil
		}
		select {
		case <-srv.Context().Done():
			return srv.Context().Err()
		case <-c.ctx.Done():
			return errShuttingDown
		case <-changed:
		case <-tick.C:
		}
	}
}
