package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
	"github.com/coordinator/coordinator/strategy"
)

// Update orchestration (DESIGN.md §4). An update's phases are persisted in
// etcd before they act: PREPARING (every session enters update mode for the
// service and acknowledges), then WAITING for freeness (WF, BF) or DRAINING
// the old version after an immediate switch (CV), then SWITCHED, then DONE;
// or ABORTED/FAILED with a reason. Switches happen under the coordinator's
// lock, so they are atomic with event application.

// DefaultMaxBlock bounds how long BF holds a call when the request says not.
const DefaultMaxBlock = 5 * time.Second

// progressEvery is how often timeouts and draining are checked.
const progressEvery = 10 * time.Millisecond

// update is one update; guarded by Coordinator.mu.
type update struct {
	rec        *pb.Update // what is persisted
	svc        graph.ServiceID
	from, to   graph.VersionID
	kind       strategy.Kind
	updateMode bool   // sidecars ask for a decision on every call to svc
	prepareRev uint64 // routing revision that put svc in update mode
	switched   bool   // the default is `to`
	rollback   bool   // aborted after the switch: default back to `from`, pins kept
	pending    bool   // reserved while its first record is being stored: not acting yet
	started    time.Time
	held       []heldCall
	decided    uint64
	pinned     uint64
	changed    chan struct{} // closed and replaced on every change
}

// heldCall is a BF call waiting for the switch (or the abort).
type heldCall struct {
	s     *session
	st    *stream
	ev    *pb.Event
	since time.Time
	// waitBegin: held until its transaction's BEGIN is applied (CV), not
	// for a switch.
	waitBegin bool
}

func (u *update) finished() bool {
	switch u.rec.Phase {
	case pb.Phase_PHASE_DONE, pb.Phase_PHASE_FAILED:
		return true
	case pb.Phase_PHASE_ABORTED:
		return !u.rollback
	}
	return false
}

// waitingBegin reports whether a call is held for its transaction's BEGIN.
// The update must not end meanwhile: ending it would decide the call as
// for a transaction not seen begin (the old version), while the
// transaction's next call to the service, no longer in update mode, goes
// to the new default without asking.
func (u *update) waitingBegin() bool {
	return slices.ContainsFunc(u.held, func(h heldCall) bool { return h.waitBegin })
}

func (u *update) notify() {
	close(u.changed)
	u.changed = make(chan struct{})
}

// decision is a CallDecision to send once the lock is released, after its
// pin (if any) is committed.
type decision struct {
	st  *stream
	msg *pb.CallDecision
	pin *clientv3.Op
}

func newUpdateID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

// startUpdate validates and starts an update.
func (c *Coordinator) startUpdate(ctx context.Context, req *pb.StartUpdateRequest) (*pb.Update, error) {
	if err := storage.ValidName("service", req.GetService()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := storage.ValidName("to_version", req.GetToVersion()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	kind := req.GetStrategy()
	if _, ok := pb.Strategy_name[int32(kind)]; !ok || kind == pb.Strategy_STRATEGY_UNSPECIFIED {
		return nil, status.Errorf(codes.InvalidArgument, "strategy %v: want wf, bf, cv or naive", kind)
	}
	var timeout, maxBlock time.Duration
	for _, d := range []struct {
		name string
		in   *durationpb.Duration
		out  *time.Duration
	}{{"timeout", req.GetTimeout(), &timeout}, {"max_block", req.GetMaxBlock(), &maxBlock}} {
		if d.in == nil {
			continue
		}
		if err := d.in.CheckValid(); err != nil || d.in.AsDuration() < 0 {
			return nil, status.Errorf(codes.InvalidArgument, "%s must be a non-negative duration", d.name)
		}
		*d.out = d.in.AsDuration()
	}
	if kind == strategy.BF && maxBlock == 0 {
		maxBlock = DefaultMaxBlock
	}

	c.mu.Lock()
	svc, ok := c.eng.LookupService(req.Service)
	if !ok {
		c.mu.Unlock()
		return nil, status.Errorf(codes.NotFound, "unknown service %q", req.Service)
	}
	if u := c.active[svc]; u != nil {
		c.mu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "service %q is already being updated by %s (phase %s)",
			req.Service, u.rec.Id, u.rec.Phase)
	}
	from, to := c.routes[svc], c.eng.Version(req.ToVersion)
	if from == to {
		c.mu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "service %q already runs %s by default", req.Service, req.ToVersion)
	}
	if !c.connectedLocked(svc, to) {
		c.mu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "no connected instance of %s@%s: register the new version first",
			req.Service, req.ToVersion)
	}
	now := time.Now()
	u := &update{
		rec: &pb.Update{
			Id: newUpdateID(), Service: req.Service,
			FromVersion: c.eng.VersionName(from), ToVersion: req.ToVersion,
			Strategy: kind, Phase: pb.Phase_PHASE_PREPARING,
			Timeout: durationpb.New(timeout), MaxBlock: durationpb.New(maxBlock),
			CreatedAt: timestamppb.New(now),
			History:   []*pb.PhaseChange{{Phase: pb.Phase_PHASE_PREPARING, At: timestamppb.New(now)}},
		},
		svc: svc, from: from, to: to, kind: kind, started: now,
		changed: make(chan struct{}), pending: true,
	}
	c.active[svc] = u // reserved: a second request now fails
	c.mu.Unlock()

	if err := c.persistUpdate(ctx, u.rec); err != nil {
		c.mu.Lock()
		delete(c.active, svc)
		c.mu.Unlock()
		return nil, status.Errorf(codes.Unavailable, "store update: %v", err)
	}
	c.mu.Lock()
	u.pending = false
	c.updates[u.rec.Id] = u
	c.lg.Info("update started", "update", u.rec.Id, "service", req.Service, "from", u.rec.FromVersion,
		"to", req.ToVersion, "strategy", strategy.Name(kind))
	if kind == strategy.NAIVE {
		// The baseline: no update mode, no pins, switch at once.
		c.switchLocked(u, pb.Phase_PHASE_SWITCHED)
		c.finishLocked(u, pb.Phase_PHASE_DONE, "")
	} else {
		u.updateMode = true
		u.prepareRev = c.bumpRoutingLocked()
		c.progressLocked()
	}
	out := c.snapshotLocked(u)
	c.unlockAndSend()
	return out, nil
}

// persistUpdate writes an update record, with extra ops in the same etcd
// transaction.
func (c *Coordinator) persistUpdate(ctx context.Context, rec *pb.Update, extra ...clientv3.Op) error {
	stored := proto.Clone(rec).(*pb.Update)
	stored.Progress = nil
	val, err := proto.Marshal(stored)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ops := append([]clientv3.Op{clientv3.OpPut(c.keys.Update(rec.Id), string(val))}, extra...)
	_, err = c.commit(ctx, ops...)
	return err
}

// setPhaseLocked persists a new phase (and extra ops) and records it; it
// reports false, changing nothing, if etcd did not take it (the caller
// retries at the next progress check).
func (c *Coordinator) setPhaseLocked(u *update, p pb.Phase, reason string, extra ...clientv3.Op) bool {
	rec := proto.Clone(u.rec).(*pb.Update)
	now := time.Now()
	rec.Phase, rec.Reason = p, reason
	rec.History = append(rec.History, &pb.PhaseChange{Phase: p, At: timestamppb.New(now), Reason: reason})
	switch p {
	case pb.Phase_PHASE_DONE, pb.Phase_PHASE_ABORTED, pb.Phase_PHASE_FAILED:
		rec.FinishedAt = timestamppb.New(now)
	}
	if err := c.persistUpdate(c.ctx, rec, extra...); err != nil {
		c.lg.Warn("persist update phase", "update", u.rec.Id, "phase", p, "error", err)
		return false
	}
	u.rec = rec
	c.lg.Info("update phase", "update", rec.Id, "service", rec.Service, "phase", p, "reason", reason)
	u.notify()
	return true
}

// switchLocked moves the default to the new version, persisting the phase
// and the route in one etcd transaction before it acts.
func (c *Coordinator) switchLocked(u *update, p pb.Phase) bool {
	route := clientv3.OpPut(c.keys.Route(u.rec.Service), u.rec.ToVersion)
	if !c.setPhaseLocked(u, p, "", route) {
		return false
	}
	u.switched = true
	u.rec.SwitchedAt = timestamppb.Now()
	c.routes[u.svc] = u.to
	c.bumpRoutingLocked()
	c.releaseHeldLocked(u)
	return true
}

// finishLocked ends an update: update mode off, pins of the service gone.
func (c *Coordinator) finishLocked(u *update, p pb.Phase, reason string) bool {
	if !c.setPhaseLocked(u, p, reason, clientv3.OpDelete(c.keys.ServicePins(u.rec.Service), clientv3.WithPrefix())) {
		return false
	}
	c.releaseHeldLocked(u)
	if u.finished() {
		u.updateMode = false
		delete(c.active, u.svc)
		delete(c.restoredPins, u.svc)
		c.bumpRoutingLocked()
	}
	return true
}

// abortLocked aborts an unfinished update. Before the switch nothing ran on
// the new version: the default stays old and held calls go there. After
// a CV switch transactions keep the version they used (pins stay), new ones
// go back to old, and update mode lasts until the new version is drained.
func (c *Coordinator) abortLocked(u *update, reason string) error {
	if u.finished() || u.rec.Phase == pb.Phase_PHASE_ABORTED {
		return status.Errorf(codes.FailedPrecondition, "update %s is %s already", u.rec.Id, u.rec.Phase)
	}
	wasSwitched := u.switched
	var extra []clientv3.Op
	if wasSwitched {
		extra = append(extra, clientv3.OpPut(c.keys.Route(u.rec.Service), u.rec.FromVersion))
	}
	rollback := wasSwitched && strategy.Pins(u.kind)
	if rollback {
		u.rec.RollingBack = true // persisted with the phase: a failover resumes the rollback
		if !c.setPhaseLocked(u, pb.Phase_PHASE_ABORTED, reason, extra...) {
			u.rec.RollingBack = false
			return status.Error(codes.Unavailable, "could not store the abort; try again")
		}
		u.rollback = true
	} else {
		extra = append(extra, clientv3.OpDelete(c.keys.ServicePins(u.rec.Service), clientv3.WithPrefix()))
		if !c.setPhaseLocked(u, pb.Phase_PHASE_ABORTED, reason, extra...) {
			return status.Error(codes.Unavailable, "could not store the abort; try again")
		}
		u.updateMode = false
		delete(c.active, u.svc)
	}
	if wasSwitched {
		c.routes[u.svc] = u.from
	}
	c.releaseHeldLocked(u)
	c.bumpRoutingLocked()
	return nil
}

// progressLocked moves every active update on as far as it can now.
func (c *Coordinator) progressLocked() {
	now := time.Now()
	for _, u := range c.active {
		c.progressOneLocked(u, now)
	}
}

func (c *Coordinator) progressOneLocked(u *update, now time.Time) {
	if len(u.held) > 0 {
		// A BEGIN that did not come within ImplicitTimeout will not: its
		// calls go where a transaction not seen begin goes.
		c.redecideLocked(u, func(h heldCall) bool {
			return h.waitBegin && now.Sub(h.since) >= c.cfg.ImplicitTimeout
		}, false)
	}
	switch {
	case u.pending:
		return
	case u.rollback:
		// Drained means no transaction may use the new version again: the
		// switch holds cover the transactions this coordinator does not
		// know (switchHoldLocked), as they cover a switch.
		if c.eng.BlockersUsing(u.svc, u.to) == 0 && c.switchHoldLocked() == "" && !u.waitingBegin() {
			c.releaseHeldLocked(u)
			u.rollback, u.rec.RollingBack = false, false
			if c.finishLocked(u, pb.Phase_PHASE_ABORTED, u.rec.Reason) {
				c.lg.Info("aborted update drained of the new version", "update", u.rec.Id)
			} else {
				u.rollback, u.rec.RollingBack = true, true
			}
		}
	case u.rec.Phase == pb.Phase_PHASE_PREPARING:
		if c.unackedLocked(u) > 0 {
			if t := u.rec.Timeout.AsDuration(); t > 0 && now.Sub(u.started) > t {
				_ = c.abortLocked(u, fmt.Sprintf("timeout: sessions did not all enter update mode within %v", t))
			}
			return
		}
		if strategy.SwitchesAtOnce(u.kind) {
			if c.switchHoldLocked() != "" || !c.connectedLocked(u.svc, u.to) {
				return
			}
			c.switchLocked(u, pb.Phase_PHASE_DRAINING)
		} else {
			c.setPhaseLocked(u, pb.Phase_PHASE_WAITING, "")
		}
	case u.rec.Phase == pb.Phase_PHASE_WAITING:
		if c.eng.Free(u.svc) && c.switchHoldLocked() == "" && c.connectedLocked(u.svc, u.to) {
			if c.switchLocked(u, pb.Phase_PHASE_SWITCHED) && !u.waitingBegin() {
				c.finishLocked(u, pb.Phase_PHASE_DONE, "")
			}
			return
		}
		if t := u.rec.Timeout.AsDuration(); t > 0 && now.Sub(u.started) > t {
			_ = c.abortLocked(u, fmt.Sprintf("timeout: %s was not free within %v", u.rec.Service, t))
			return
		}
		if mb := u.rec.MaxBlock.AsDuration(); mb > 0 && len(u.held) > 0 && now.Sub(u.held[0].since) > mb {
			_ = c.abortLocked(u, fmt.Sprintf("max-block: a call was held longer than %v", mb))
		}
	case u.rec.Phase == pb.Phase_PHASE_SWITCHED:
		// Switched and, for CV, drained: DONE was not stored (the
		// previous leader stopped in between) or waits for a call held
		// for its BEGIN.
		if !u.waitingBegin() {
			c.finishLocked(u, pb.Phase_PHASE_DONE, "")
		}
	case u.rec.Phase == pb.Phase_PHASE_DRAINING:
		if c.eng.BlockersUsing(u.svc, u.from) == 0 && c.switchHoldLocked() == "" && !u.waitingBegin() {
			if c.setPhaseLocked(u, pb.Phase_PHASE_SWITCHED, "") {
				c.finishLocked(u, pb.Phase_PHASE_DONE, "")
			}
		}
	}
}

// connectedLocked reports whether an instance of svc@v is connected: an
// update switches only to a version that can take the calls (after a
// failover, once one of its sidecars is back).
func (c *Coordinator) connectedLocked(svc graph.ServiceID, v graph.VersionID) bool {
	for _, s := range c.sessions {
		if s.svc == svc && s.ver == v && s.stream != nil {
			return true
		}
	}
	return false
}

// unackedLocked counts live sessions that have not acknowledged the routing
// revision that put the service in update mode.
func (c *Coordinator) unackedLocked(u *update) int {
	n := 0
	for _, s := range c.sessions {
		if s.ackedRev < u.prepareRev {
			n++
		}
	}
	return n
}

// progressTickLocked checks timeouts and draining (every progressEvery).
func (c *Coordinator) progressTickLocked(time.Time) {
	if len(c.active) > 0 {
		c.progressLocked()
	}
}

// decideLocked answers a CALL sent with wait: it applies the call at the
// version the update's strategy picks (or at the default when the service
// is not being updated), or holds it (BF). The answer is queued; its pin,
// when the call is a transaction's first use of a service mid-update, is
// committed before the answer is sent.
func (c *Coordinator) decideLocked(s *session, st *stream, ev *pb.Event, to graph.ServiceID) error {
	return c.decideMaybeWaitLocked(s, st, ev, to, true)
}

// decideMaybeWaitLocked is decideLocked; with mayWait false it never holds
// a call for its transaction's BEGIN (see below).
func (c *Coordinator) decideMaybeWaitLocked(s *session, st *stream, ev *pb.Event, to graph.ServiceID, mayWait bool) error {
	u := c.active[to]
	if u != nil && u.pending {
		u = nil // not acting yet: the default applies
	}
	version := c.routes[to]
	first := true
	if u != nil {
		used, ok := c.eng.Used(ev.TxnId, to)
		first = !ok
		if !ok && strategy.Pins(u.kind) {
			// A transaction this coordinator did not see begin (implicit:
			// known from downstream calls; legacy) may have used the
			// service before: its pin says where, and without one it can
			// only have used the old version (DESIGN.md §6). So it has a
			// past there: BF does not hold it (it could not end, and as
			// legacy it keeps the service from being free), CV keeps it
			// on the version it used.
			info, live := c.eng.Txn(ev.TxnId)
			if (!live || info.Implicit) && !info.Legacy && u.switched && mayWait {
				// Its BEGIN has not arrived (another stream is behind): its
				// root may run on this very service, on either version, and
				// this call re-enter it. Wait for the BEGIN (or for the
				// resync that makes it legacy), at most ImplicitTimeout.
				u.held = append(u.held, heldCall{s: s, st: st, ev: proto.Clone(ev).(*pb.Event), since: time.Now(), waitBegin: true})
				u.notify()
				return nil
			}
			if !live || info.Implicit || info.Legacy {
				used, ok = u.from, true
				if v, pinned := c.restoredPins[to][ev.TxnId]; pinned {
					used = v
				}
			}
		}
		d := strategy.Decide(u.kind, u.switched, u.rollback, uint32(u.from), uint32(u.to),
			strategy.Call{Used: uint32(used), HasUsed: ok})
		if d.Hold && c.selfPreservingLocked() {
			// The switch it would wait for is paused: old (DESIGN.md §7).
			d = strategy.Decision{Version: uint32(u.from)}
		}
		if d.Hold {
			u.held = append(u.held, heldCall{s: s, st: st, ev: proto.Clone(ev).(*pb.Event), since: time.Now()})
			u.notify()
			return nil
		}
		version = graph.VersionID(d.Version)
	}
	if err := c.callLocked(s, ev, to, version); err != nil {
		return err
	}
	msg := &pb.CallDecision{Seq: ev.Seq, Version: c.eng.VersionName(version)}
	var pin *clientv3.Op
	if u != nil {
		u.decided++
		if first && strategy.Pins(u.kind) {
			lease := clientv3.NoLease
			if info, ok := c.eng.Txn(ev.TxnId); ok {
				if owner := c.ownerSessionLocked(info.Owner); owner != nil {
					lease = owner.lease
				}
			}
			op := clientv3.OpPut(c.keys.Pin(u.rec.Service, ev.TxnId), msg.Version, clientv3.WithLease(lease))
			pin = &op
			c.pendingPins[string(op.KeyBytes())] = pin
			u.pinned++
		} else if p := c.pendingPins[c.keys.Pin(u.rec.Service, ev.TxnId)]; p != nil {
			// A concurrent sub-transaction's first use, its pin not in etcd
			// yet: this answer must not be sent before it is durable, so it
			// carries the same (idempotent) pin.
			pin = p
		}
	}
	c.out = append(c.out, decision{st: st, msg: msg, pin: pin})
	return nil
}

// releaseHeldLocked answers the held calls of u: to the new version once
// switched, else (abort) to the old one.
func (c *Coordinator) releaseHeldLocked(u *update) {
	c.redecideLocked(u, func(heldCall) bool { return true }, !u.finished())
}

// redecideLocked decides again the held calls of u that match; with
// mayWait false none is held for its BEGIN again.
func (c *Coordinator) redecideLocked(u *update, match func(heldCall) bool, mayWait bool) {
	var again, keep []heldCall
	for _, h := range u.held {
		if match(h) {
			again = append(again, h)
		} else {
			keep = append(keep, h)
		}
	}
	if len(again) == 0 {
		return
	}
	u.held = keep
	for _, h := range again {
		if c.sessions[h.s.rec.InstanceId] != h.s || h.s.stream != h.st {
			continue // its sidecar is gone; the call failed there
		}
		err := c.decideMaybeWaitLocked(h.s, h.st, h.ev, u.svc, mayWait)
		if err != nil {
			c.out = append(c.out, decision{st: h.st, msg: &pb.CallDecision{Seq: h.ev.Seq, Error: status.Convert(err).Message()}})
		}
	}
	u.notify()
}

// releaseBegunLocked decides the calls held for the BEGIN of txn, now
// applied (or txn made legacy by a resync).
func (c *Coordinator) releaseBegunLocked(txn string) {
	for _, u := range c.active {
		if len(u.held) > 0 {
			c.redecideLocked(u, func(h heldCall) bool { return h.waitBegin && h.ev.TxnId == txn }, true)
		}
	}
}

// dropHeldLocked forgets the held calls of session s (of its stream st
// only, if st is set): their sidecar is gone, so is the request that made
// them, and a dead call must not count toward --max-block.
func (c *Coordinator) dropHeldLocked(s *session, st *stream) {
	for _, u := range c.active {
		n := len(u.held)
		u.held = slices.DeleteFunc(u.held, func(h heldCall) bool { return h.s == s && (st == nil || h.st == st) })
		if len(u.held) != n {
			u.notify()
		}
	}
}

// unlockAndSend releases the lock and sends the queued call decisions:
// those with pins go through the pin committer.
func (c *Coordinator) unlockAndSend() {
	out := c.out
	c.out = nil
	c.mu.Unlock()
	for _, d := range out {
		if d.pin != nil {
			c.pins.add(d)
			continue
		}
		c.sendDecision(d)
	}
}

func (c *Coordinator) sendDecision(d decision) {
	if c.fenced.Load() {
		return // another replica leads: it answers the call when the sidecar reconnects
	}
	err := d.st.send(&pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_CallDecision{CallDecision: d.msg}})
	if err != nil {
		c.lg.Debug("send call decision", "seq", d.msg.Seq, "error", err)
	}
}

// snapshotLocked returns the update with its live progress.
func (c *Coordinator) snapshotLocked(u *update) *pb.Update {
	out := proto.Clone(u.rec).(*pb.Update)
	if u.finished() {
		return out
	}
	p := &pb.UpdateProgress{
		Blocking:               uint32(c.eng.BlockerCount(u.svc)),
		HeldCalls:              uint32(len(u.held)),
		UnacknowledgedSessions: uint32(c.unackedLocked(u)),
		DecidedCalls:           u.decided,
		PinnedCalls:            u.pinned,
	}
	if u.switched {
		old := u.from
		if u.rollback {
			old = u.to
		}
		p.OldTransactions = uint32(c.eng.BlockersUsing(u.svc, old))
	}
	out.Progress = p
	return out
}
