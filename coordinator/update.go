package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
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

// progressEvery is how often timeouts and draining are checked.
const progressEvery = 10 * time.Millisecond

// update is one update; guarded by Coordinator.mu.
type update struct {
	rec        *pb.Update // what is persisted
	svc        graph.ServiceID
	from, to   graph.VersionID
	strat      strategy.Strategy
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

func (u *update) finished() bool { return u.state().Finished() }

// state is the update as its strategy sees it.
func (u *update) state() strategy.State {
	return strategy.State{Phase: u.rec.Phase, Switched: u.switched, RollingBack: u.rollback,
		Options: strategy.Options{Timeout: u.rec.Timeout.AsDuration(), MaxBlock: u.rec.MaxBlock.AsDuration(),
			PrepareTimeout: u.rec.PrepareTimeout.AsDuration()}}
}

// waitingBegin reports whether a call is held for its transaction's BEGIN.
// The update must not end meanwhile: ending it would decide the call as
// for a transaction not seen begin (the old version), while the
// transaction's next call to the service, no longer in update mode, goes
// to the new default without asking.
func (u *update) waitingBegin() bool {
	return slices.ContainsFunc(u.held, func(h heldCall) bool { return h.waitBegin })
}

// waitingBeginCount counts the calls held for their transaction's BEGIN.
func (u *update) waitingBeginCount() int {
	n := 0
	for _, h := range u.held {
		if h.waitBegin {
			n++
		}
	}
	return n
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
		return nil, err
	}
	if err := storage.ValidName("to_version", req.GetToVersion()); err != nil {
		return nil, err
	}
	kind := req.GetStrategy()
	strat, err := strategy.For(kind)
	if err != nil {
		return nil, fmt.Errorf("%w: strategy %v: want wf, bf, cv or naive", ErrInvalidArgument, kind)
	}
	var timeout, maxBlock, prepareTimeout time.Duration
	for _, d := range []struct {
		name string
		in   *durationpb.Duration
		out  *time.Duration
	}{{"timeout", req.GetTimeout(), &timeout}, {"max_block", req.GetMaxBlock(), &maxBlock},
		{"prepare_timeout", req.GetPrepareTimeout(), &prepareTimeout}} {
		if d.in == nil {
			continue
		}
		if err := d.in.CheckValid(); err != nil || d.in.AsDuration() < 0 {
			return nil, fmt.Errorf("%w: %s must be a non-negative duration", ErrInvalidArgument, d.name)
		}
		*d.out = d.in.AsDuration()
	}
	if prepareTimeout == 0 {
		prepareTimeout = c.cfg.PrepareTimeout
	}
	if timeout == 0 && (strat.Kind() == strategy.WF || strat.Kind() == strategy.BF) {
		timeout = c.cfg.UpdateTimeout // WAITING has a bound
	}
	opts := strat.Options(strategy.Options{Timeout: timeout, MaxBlock: maxBlock, PrepareTimeout: prepareTimeout})
	timeout, maxBlock = opts.Timeout, opts.MaxBlock

	c.mu.Lock()
	svc, ok := c.eng.LookupService(req.Service)
	if !ok {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w %q", ErrUnknownService, req.Service)
	}
	if u := c.active[svc]; u != nil {
		err := fmt.Errorf("service %q is %w by %s (phase %s)", req.Service, ErrUpdateInProgress, u.rec.Id, u.rec.Phase)
		c.mu.Unlock()
		return nil, err
	}
	from, to := c.routes[svc], c.eng.Version(req.ToVersion)
	if from == to {
		c.mu.Unlock()
		return nil, fmt.Errorf("service %q %w %s by default", req.Service, ErrAlreadyAtVersion, req.ToVersion)
	}
	if !c.connectedLocked(svc, to) {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w of %s@%s: register the new version first",
			ErrNoInstance, req.Service, req.ToVersion)
	}
	now := time.Now()
	u := &update{
		rec: &pb.Update{
			Id: newUpdateID(), Service: req.Service,
			FromVersion: c.eng.VersionName(from), ToVersion: req.ToVersion,
			Strategy: kind, Phase: pb.Phase_PHASE_PREPARING,
			Timeout: durationpb.New(timeout), MaxBlock: durationpb.New(maxBlock),
			PrepareTimeout: durationpb.New(prepareTimeout),
			CreatedAt:      timestamppb.New(now),
			History:        []*pb.PhaseChange{{Phase: pb.Phase_PHASE_PREPARING, At: timestamppb.New(now)}},
		},
		svc: svc, from: from, to: to, strat: strat, started: now,
		changed: make(chan struct{}), pending: true,
	}
	c.active[svc] = u // reserved: a second request now fails
	c.mu.Unlock()

	if err := c.persistUpdate(ctx, u.rec); err != nil {
		c.mu.Lock()
		delete(c.active, svc)
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: store update: %w", ErrUnavailable, err)
	}
	c.mu.Lock()
	u.pending = false
	c.updates[u.rec.Id] = u
	c.lg.Info("update started", "update", u.rec.Id, "service", req.Service, "from", u.rec.FromVersion,
		"to", req.ToVersion, "strategy", strategy.Name(kind))
	if strat.UpdateMode() {
		u.updateMode = true
		u.prepareRev = c.bumpRoutingLocked()
	}
	c.progressLocked()
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
		return fmt.Errorf("update %s %w: it is %s already", u.rec.Id, ErrUpdateEnded, u.rec.Phase)
	}
	plan := u.strat.Abort(u.state())
	var extra []clientv3.Op
	if plan.RouteBack {
		extra = append(extra, clientv3.OpPut(c.keys.Route(u.rec.Service), u.rec.FromVersion))
	}
	if plan.Rollback {
		u.rec.RollingBack = true // persisted with the phase: a failover resumes the rollback
		if !c.setPhaseLocked(u, pb.Phase_PHASE_ABORTED, reason, extra...) {
			u.rec.RollingBack = false
			return fmt.Errorf("%w: could not store the abort; try again", ErrUnavailable)
		}
		u.rollback = true
	} else {
		extra = append(extra, clientv3.OpDelete(c.keys.ServicePins(u.rec.Service), clientv3.WithPrefix()))
		if !c.setPhaseLocked(u, pb.Phase_PHASE_ABORTED, reason, extra...) {
			return fmt.Errorf("%w: could not store the abort; try again", ErrUnavailable)
		}
		u.updateMode = false
		delete(c.active, u.svc)
	}
	if plan.RouteBack {
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
		// A BEGIN that did not come within BeginWaitTimeout will not: its
		// calls go where a transaction not seen begin goes.
		c.redecideLocked(u, func(h heldCall) bool {
			if !h.waitBegin || now.Sub(h.since) < c.cfg.BeginWaitTimeout {
				return false
			}
			c.metrics.beginWait.WithLabelValues("timeout").Observe(now.Sub(h.since).Seconds())
			c.lg.Debug("call held for its BEGIN timed out", "txn", h.ev.TxnId, "service", h.ev.Service, "waited", now.Sub(h.since))
			return true
		}, false)
	}
	if u.pending {
		return
	}
	// The strategy's phase machine says what to do; each step is
	// persisted before it acts, and the machine is asked again until it
	// waits (a WF switch and its DONE happen in one progress check).
	for range maxStepsPerCheck {
		a := u.strat.Next(u.state(), updateView{c: c, u: u, now: now})
		if a.Step == strategy.Wait || !c.stepLocked(u, a) || u.finished() {
			return
		}
	}
}

// maxStepsPerCheck bounds the phase changes of one progress check; no
// strategy takes more than three in a row (PREPARING to DONE).
const maxStepsPerCheck = 4

// stepLocked carries out one step of a phase machine; it reports whether
// the update changed (etcd took the phase), so the machine may go on.
func (c *Coordinator) stepLocked(u *update, a strategy.Action) bool {
	switch a.Step {
	case strategy.Enter:
		return c.setPhaseLocked(u, a.Phase, "")
	case strategy.Switch:
		return c.switchLocked(u, a.Phase)
	case strategy.Finish:
		if !u.rollback {
			return c.finishLocked(u, a.Phase, "")
		}
		c.releaseHeldLocked(u)
		u.rollback, u.rec.RollingBack = false, false
		if !c.finishLocked(u, a.Phase, u.rec.Reason) {
			u.rollback, u.rec.RollingBack = true, true
			return false
		}
		c.lg.Info("aborted update drained of the new version", "update", u.rec.Id)
		return true
	case strategy.Abandon:
		_ = c.abortLocked(u, a.Reason)
	}
	return false
}

// updateView is what a phase machine observes of u; the coordinator's
// lock is held while it is asked.
type updateView struct {
	c   *Coordinator
	u   *update
	now time.Time
}

func (v updateView) Subject() string        { return v.u.rec.Service }
func (v updateView) Elapsed() time.Duration { return v.now.Sub(v.u.started) }
func (v updateView) Unacked() int           { return v.c.unackedLocked(v.u) }
func (v updateView) UnackedSessions(limit int) []string {
	return v.c.unackedSessionsLocked(v.u, limit)
}
func (v updateView) Free() bool         { return v.c.eng.Free(v.u.svc) }
func (v updateView) SwitchesHeld() bool { return v.c.switchHoldLocked() != "" }
func (v updateView) Ready() bool        { return v.c.connectedLocked(v.u.svc, v.u.to) }
func (v updateView) WaitingBegin() bool { return v.u.waitingBegin() }

// InUse: Drained means no transaction may use that version again: the
// switch holds cover the transactions this coordinator does not know
// (switchHoldLocked), as they cover a switch.
func (v updateView) InUse(t strategy.Target) bool {
	ver := v.u.from
	if t == strategy.New {
		ver = v.u.to
	}
	return v.c.eng.BlockersUsing(v.u.svc, ver) > 0
}

func (v updateView) HeldLongest() time.Duration {
	if len(v.u.held) == 0 {
		return 0
	}
	return v.now.Sub(v.u.held[0].since)
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

// unackedSessionsLocked names the first (by instance id) limit of the
// sessions unackedLocked counts.
func (c *Coordinator) unackedSessionsLocked(u *update, limit int) []string {
	var ids []string
	for id, s := range c.sessions {
		if s.ackedRev < u.prepareRev {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids[:min(limit, len(ids))]
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
		if !ok && u.strat.Pins() {
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
				// resync that makes it legacy), at most BeginWaitTimeout.
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
		d := u.strat.Decide(u.state(), strategy.Call{Used: ok})
		if d.Hold && c.selfPreservingLocked() {
			// The switch it would wait for is paused: old (DESIGN.md §7).
			d = strategy.Decision{Target: strategy.Old}
		}
		if d.Hold {
			u.held = append(u.held, heldCall{s: s, st: st, ev: proto.Clone(ev).(*pb.Event), since: time.Now()})
			u.notify()
			return nil
		}
		switch d.Target {
		case strategy.Old:
			version = u.from
		case strategy.New:
			version = u.to
		default:
			version = used
		}
	}
	if err := c.callLocked(s, ev, to, version); err != nil {
		return err
	}
	msg := &pb.CallDecision{Seq: ev.Seq, Version: c.eng.VersionName(version)}
	var pin *clientv3.Op
	if u != nil {
		u.decided++
		if first && u.strat.Pins() {
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
			c.out = append(c.out, decision{st: h.st, msg: &pb.CallDecision{Seq: h.ev.Seq, Error: err.Error()}})
		}
	}
	u.notify()
}

// releaseBegunLocked decides the calls held for the BEGIN of txn, now
// applied (or txn made legacy by a resync).
func (c *Coordinator) releaseBegunLocked(txn string) {
	for _, u := range c.active {
		if len(u.held) > 0 {
			c.redecideLocked(u, func(h heldCall) bool {
				if !h.waitBegin || h.ev.TxnId != txn {
					return false
				}
				c.metrics.beginWait.WithLabelValues("begun").Observe(time.Since(h.since).Seconds())
				return true
			}, true)
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
	if p.UnacknowledgedSessions > 0 {
		p.UnacknowledgedSessionIds = c.unackedSessionsLocked(u, strategy.MaxNamed)
	}
	if u.switched {
		old := u.from
		if u.rollback {
			old = u.to
		}
		p.OldTransactions = uint32(c.eng.BlockersUsing(u.svc, old))
	}
	p.WaitingFor = c.waitingForLocked(u, p, time.Now())
	out.Progress = p
	return out
}

// waitingForLocked says what u waits for now and what bounds that wait
// (UpdateProgress.waiting_for); each wait an update can be in is here.
func (c *Coordinator) waitingForLocked(u *update, p *pb.UpdateProgress, now time.Time) string {
	opts := u.state().Options
	left := func(bound time.Duration) string {
		return fmt.Sprintf("%v left", max(bound-now.Sub(u.started), 0).Round(time.Second))
	}
	var why []string
	if hold := c.switchHoldLocked(); hold != "" {
		why = append(why, "switches held ("+hold+"): until each such session re-registers or its lease, or self-preservation's grace, ends")
	}
	switch {
	case u.rollback:
		why = append(why, fmt.Sprintf("%d transactions that used %s@%s to end (each ends, or its session's lease expires)",
			p.OldTransactions, u.rec.Service, u.rec.ToVersion))
	case u.rec.Phase == pb.Phase_PHASE_PREPARING && p.UnacknowledgedSessions > 0:
		why = append(why, fmt.Sprintf("%d sessions to acknowledge update mode (%s): aborts at prepare-timeout %v, %s",
			p.UnacknowledgedSessions, strategy.Named(p.UnacknowledgedSessionIds, int(p.UnacknowledgedSessions)),
			opts.PrepareTimeout, left(opts.PrepareTimeout)))
	case u.rec.Phase == pb.Phase_PHASE_PREPARING && u.updateMode && !c.connectedLocked(u.svc, u.to):
		why = append(why, fmt.Sprintf("an instance of %s@%s to connect: aborts at prepare-timeout %v, %s",
			u.rec.Service, u.rec.ToVersion, opts.PrepareTimeout, left(opts.PrepareTimeout)))
	case u.rec.Phase == pb.Phase_PHASE_WAITING:
		w := fmt.Sprintf("%s to be free (%d transactions block it)", u.rec.Service, p.Blocking)
		if opts.Timeout > 0 {
			w += fmt.Sprintf(": aborts at timeout %v, %s", opts.Timeout, left(opts.Timeout))
		} else {
			w += ": no timeout (stored before updates had one), so until it is free or aborted"
		}
		why = append(why, w)
		if len(u.held) > 0 && opts.MaxBlock > 0 {
			why = append(why, fmt.Sprintf("%d calls held, the oldest for %v: aborts at max-block %v",
				len(u.held), now.Sub(u.held[0].since).Round(time.Millisecond), opts.MaxBlock))
		}
	case u.rec.Phase == pb.Phase_PHASE_DRAINING:
		why = append(why, fmt.Sprintf("%d transactions that used %s@%s to end (each ends, or its session's lease expires)",
			p.OldTransactions, u.rec.Service, u.rec.FromVersion))
	}
	if n := u.waitingBeginCount(); n > 0 {
		why = append(why, fmt.Sprintf("%d calls waiting for their transaction's BEGIN: each at most %v (--begin-wait-timeout)", n, c.cfg.BeginWaitTimeout))
	}
	return strings.Join(why, "; ")
}
