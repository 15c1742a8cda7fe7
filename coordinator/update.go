package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
// or ABORTED/FAILED with a reason.
//
// A phase change is decided under the coordinator's lock, in the critical
// section of event application that saw it due (for a switch: the one
// that saw the service free), and marks the update as switching
// (update.writing). It is then written to etcd without the lock, by the
// phase writer (runPhaseWriter) or, for an operator's abort, by the admin
// call itself; once stored it is applied under the lock again. While the
// mark is set, every call to the service that waits for a decision is
// parked, as a held call, and decided only once the new phase is applied:
// no call is decided for the old phase after the change was decided
// (DESIGN.md §4.2), and a slow etcd delays only those calls, never the
// event path (§5). A write that fails removes the mark, changing nothing;
// the change is decided again at the next progress check.

// progressEvery is how often timeouts and draining are checked.
const progressEvery = 10 * time.Millisecond

// update is one update; guarded by Coordinator.mu.
type update struct {
	rec *pb.Update // what is persisted
	// members are the services of the set, with their versions (one for
	// an update of one service: updateset.go); svcs are their services.
	members    []member
	svcs       []graph.ServiceID
	strat      strategy.Strategy
	updateMode bool   // sidecars ask for a decision on every call to the set
	prepareRev uint64 // routing revision that put the set in update mode
	switched   bool   // the defaults are the new versions
	rollback   bool   // aborted after the switch: defaults back to the old versions, pins kept
	pending    bool   // reserved while its first record is being stored: not acting yet
	started    time.Time
	held       []heldCall
	// writing is the phase change being stored; while set the update is
	// switching: calls to svc are parked, and no other change is decided.
	writing *phaseChange
	decided uint64
	pinned  uint64
	changed chan struct{} // closed and replaced on every change
	canary  *canaryRun    // a canary's analysis (canary.go); nil: not a canary
}

// heldCall is a call waiting for its decision: a BF call waiting for the
// switch (or the abort), a call waiting for its transaction's BEGIN, or a
// call parked while the update's next phase is being stored.
type heldCall struct {
	s     *session
	st    *stream
	ev    *pb.Event
	to    graph.ServiceID // the member of the set it calls
	since time.Time
	// waitBegin: held until its transaction's BEGIN is applied (CV), not
	// for a switch.
	waitBegin bool
	// switching: parked while the update's next phase is stored; decided
	// once that phase is applied (or its write failed).
	switching bool
	// noWaitBegin: its wait for BEGIN is over; it is not held for it again.
	noWaitBegin bool
	// arrived is when the call was first decided (held since): its
	// decision's latency counts from then, however often it is held.
	arrived time.Time
}

// phaseChange is a new phase of an update, decided under the coordinator's
// lock, stored in etcd without it, then applied under it again.
type phaseChange struct {
	u     *update
	rec   *pb.Update    // the record with the new phase
	extra []storage.Op  // written in the same store transaction
	apply func()        // under mu, once stored; may be nil
	done  chan struct{} // closed once applied, or given up
	err   error         // why it was not stored; set before done closes
}

func (u *update) finished() bool { return u.state().Finished() }

// state is the update as its strategy sees it.
func (u *update) state() strategy.State {
	return strategy.State{Phase: u.rec.Phase, Switched: u.switched, RollingBack: u.rollback,
		Options: strategy.Options{Timeout: u.rec.Timeout.AsDuration(), MaxBlock: u.rec.MaxBlock.AsDuration(),
			PrepareTimeout: u.rec.PrepareTimeout.AsDuration()}, Canary: u.canaryState()}
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
	pin *storage.Op
	// latency, for a call to a service under update, observes the time
	// from arrived to the decision being sent.
	latency prometheus.Observer
	arrived time.Time
}

func newUpdateID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

// startOptions is a StartUpdateRequest checked for what does not depend
// on the state: its strategy and the bounds it would run with.
type startOptions struct {
	kind                              pb.Strategy
	strat                             strategy.Strategy
	timeout, maxBlock, prepareTimeout time.Duration
	canary                            *pb.Canary // nil: not a canary
}

// checkStart validates req and works out the bounds the update would run
// with: the request's, else the server's defaults, as the strategy wants
// them.
func (o *orchestrator) checkStart(req *pb.StartUpdateRequest) (startOptions, error) {
	if _, err := requestMembers(req); err != nil {
		return startOptions{}, err
	}
	kind := req.GetStrategy()
	strat, err := strategy.For(kind)
	if err != nil {
		return startOptions{}, fmt.Errorf("%w: strategy %v: want wf, bf, cv or naive", ErrInvalidArgument, kind)
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
			return startOptions{}, fmt.Errorf("%w: %s must be a non-negative duration", ErrInvalidArgument, d.name)
		}
		*d.out = d.in.AsDuration()
	}
	canary, err := checkCanary(req, kind)
	if err != nil {
		return startOptions{}, err
	}
	if prepareTimeout == 0 {
		prepareTimeout = o.cfg.PrepareTimeout
	}
	if timeout == 0 && (strat.Kind() == strategy.WF || strat.Kind() == strategy.BF) {
		timeout = o.cfg.UpdateTimeout // WAITING has a bound
	}
	opts := strat.Options(strategy.Options{Timeout: timeout, MaxBlock: maxBlock, PrepareTimeout: prepareTimeout})
	return startOptions{kind: kind, strat: strat, timeout: opts.Timeout, maxBlock: opts.MaxBlock,
		prepareTimeout: prepareTimeout, canary: canary}, nil
}

// startableLocked says whether an update of service to version may start
// now, and if so returns the service and both versions: the service is
// known, has no unfinished update, does not run version by default, and an
// instance of version is connected. The event lock is held.
func (o *orchestrator) startableLocked(service, version string) (svc graph.ServiceID, from, to graph.VersionID, err error) {
	svc, ok := o.eng.LookupService(service)
	if !ok {
		return 0, 0, 0, fmt.Errorf("%w %q", ErrUnknownService, service)
	}
	if u := o.upd.active(svc); u != nil {
		return 0, 0, 0, fmt.Errorf("service %q is %w by %s (phase %s)", service, ErrUpdateInProgress, u.rec.Id, u.rec.Phase)
	}
	from = o.cat.defaultVersion(svc)
	to, ok = o.eng.LookupVersion(version)
	if ok && from == to {
		return 0, 0, 0, fmt.Errorf("service %q %w %s by default", service, ErrAlreadyAtVersion, version)
	}
	if !ok || !o.connectedLocked(svc, to) {
		return 0, 0, 0, fmt.Errorf("%w of %s@%s: register the new version first", ErrNoInstance, service, version)
	}
	return svc, from, to, nil
}

// startUpdate validates and starts an update.
func (o *orchestrator) startUpdate(ctx context.Context, req *pb.StartUpdateRequest) (*pb.Update, error) {
	return o.startUpdateWith(ctx, req, nil)
}

// startUpdateWith is startUpdate; with, if set, gives the writes to commit
// atomically with the new update's record (a lane promotion's, lanes.go),
// given its id.
func (o *orchestrator) startUpdateWith(ctx context.Context, req *pb.StartUpdateRequest, with func(id string) []storage.Op) (*pb.Update, error) {
	opts, err := o.checkStart(req)
	if err != nil {
		return nil, err
	}
	kind, strat, timeout, maxBlock, prepareTimeout := opts.kind, opts.strat, opts.timeout, opts.maxBlock, opts.prepareTimeout
	asked, _ := requestMembers(req) // checkStart checked it

	o.ev.lock()
	var members []*pb.UpdateMember
	for _, m := range asked {
		_, from, _, err := o.startableLocked(m.Service, m.Version)
		if err != nil {
			o.ev.unlock()
			return nil, err
		}
		members = append(members, &pb.UpdateMember{Service: m.Service, FromVersion: o.eng.VersionName(from), ToVersion: m.Version})
	}
	now := time.Now()
	u := &update{
		rec: &pb.Update{
			Id: newUpdateID(), Service: members[0].Service,
			FromVersion: members[0].FromVersion, ToVersion: members[0].ToVersion,
			Strategy: kind, Phase: pb.Phase_PHASE_PREPARING,
			Timeout: durationpb.New(timeout), MaxBlock: durationpb.New(maxBlock),
			PrepareTimeout: durationpb.New(prepareTimeout),
			CreatedAt:      timestamppb.New(now),
			History:        []*pb.PhaseChange{{Phase: pb.Phase_PHASE_PREPARING, At: timestamppb.New(now)}},
		},
		strat: strat, started: now,
		changed: make(chan struct{}), pending: true,
	}
	if len(members) > 1 {
		u.rec.Members = members
	}
	o.setMembers(u)
	if opts.canary != nil {
		u.rec.Canary, u.canary = opts.canary, newCanaryRun(opts.canary)
	}
	o.upd.activate(u) // reserved: a second request now fails
	o.ev.unlock()

	var extra []storage.Op
	if with != nil {
		extra = with(u.rec.Id)
	}
	if err := o.persistUpdate(ctx, u.rec, extra...); err != nil {
		o.ev.lock()
		o.upd.deactivate(u)
		o.ev.unlock()
		return nil, fmt.Errorf("%w: store update: %w", ErrUnavailable, err)
	}
	o.ev.lock()
	u.pending = false
	o.upd.keep(u)
	o.metrics.updatesStarted.WithLabelValues(strategyLabel(kind)).Inc()
	o.lg.Info("update started", "update", u.rec.Id, "services", u.subject(), "from", u.sideNames(strategy.Old),
		"to", u.sideNames(strategy.New), "strategy", strategy.Name(kind))
	if strat.UpdateMode() {
		u.prepareRev = o.setUpdateModeLocked(u, true)
		o.progressLocked()
	} else {
		// The baseline switches at once, with no update mode: the
		// request waits for its phase writes (not holding the lock).
		for range maxStepsPerCheck {
			a := u.strat.Next(u.state(), updateView{o: o, u: u, now: time.Now()})
			if a.Step == strategy.Wait || !o.stepLocked(u, a, o.storedLocked) || u.finished() {
				break
			}
		}
	}
	out := o.snapshotLocked(u)
	o.ev.unlockAndSend()
	return out, nil
}

// persistUpdate writes an update record, with extra ops in the same etcd
// transaction.
func (o *orchestrator) persistUpdate(ctx context.Context, rec *pb.Update, extra ...storage.Op) error {
	stored := proto.Clone(rec).(*pb.Update)
	stored.Progress = nil
	put := storage.PutUpdate(stored)
	if err := put.Err(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return o.ev.commit(ctx, append([]storage.Op{put}, extra...)...)
}

// phaseChangeLocked decides a new phase of u (and extra ops to store with
// it): it marks u as switching and returns the change, to be stored by
// queuePhaseLocked or storePhaseLocked; apply runs under the lock once it
// is stored.
func (o *orchestrator) phaseChangeLocked(u *update, p pb.Phase, reason string, apply func(), extra ...storage.Op) *phaseChange {
	rec := proto.Clone(u.rec).(*pb.Update)
	now := time.Now()
	rec.Phase, rec.Reason = p, reason
	rec.History = append(rec.History, &pb.PhaseChange{Phase: p, At: timestamppb.New(now), Reason: reason})
	switch p {
	case pb.Phase_PHASE_DONE, pb.Phase_PHASE_ABORTED, pb.Phase_PHASE_FAILED:
		rec.FinishedAt = timestamppb.New(now)
	}
	pc := &phaseChange{u: u, rec: rec, extra: extra, apply: apply, done: make(chan struct{})}
	u.writing = pc
	u.notify()
	return pc
}

// queuePhaseLocked hands a change to the phase writer.
func (o *orchestrator) queuePhaseLocked(pc *phaseChange) { o.phases.add(pc) }

// storePhaseLocked stores a change and applies it, releasing the lock
// (sending what was queued) meanwhile: for callers that must answer with
// the outcome (an operator's abort). The lock is held again on return.
func (o *orchestrator) storePhaseLocked(pc *phaseChange) error {
	o.ev.unlockAndSend()
	err := o.persistUpdate(o.ev.context(), pc.rec, pc.extra...)
	o.ev.lock()
	o.endPhaseLocked(pc, err)
	return err
}

// endPhaseLocked applies a stored change, or forgets one etcd did not take
// (the progress check decides it again), and decides the calls parked
// meanwhile under the phase now in force.
func (o *orchestrator) endPhaseLocked(pc *phaseChange, err error) {
	u := pc.u
	if u.writing == pc {
		u.writing = nil
	}
	pc.err = err
	if err != nil {
		o.lg.Warn("persist update phase", "update", u.rec.Id, "phase", pc.rec.Phase, "error", err)
	} else {
		prev, wasFinished := u.rec, u.finished()
		u.rec = pc.rec
		o.observePhaseLocked(u, prev, wasFinished)
		o.lg.Info("update phase", "update", u.rec.Id, "services", u.subject(), "phase", u.rec.Phase, "reason", u.rec.Reason)
		if pc.apply != nil {
			pc.apply()
		}
		o.analysisPhaseLocked(u)
	}
	close(pc.done)
	o.redecideLocked(u, func(h heldCall) bool { return h.switching }, !u.finished())
	u.notify()
}

// observePhaseLocked records a stored phase change of u (from prev) in the
// update metrics: how long the phase that ended lasted, and the end of
// the update if it is now over (u.rec is the new record; the caller
// applies the change after this).
func (o *orchestrator) observePhaseLocked(u *update, prev *pb.Update, wasFinished bool) {
	strat := strategyLabel(u.rec.Strategy)
	if h := prev.GetHistory(); len(h) > 0 && len(u.rec.History) > 0 {
		began, ended := h[len(h)-1].GetAt().AsTime(), u.rec.History[len(u.rec.History)-1].GetAt().AsTime()
		o.metrics.phaseSeconds.WithLabelValues(strat, phaseLabel(prev.Phase)).Observe(ended.Sub(began).Seconds())
	}
	ended := strategy.State{Phase: u.rec.Phase, RollingBack: u.rec.RollingBack}.Finished()
	if ended && !wasFinished && o.laneKick != nil {
		o.laneKick() // it may be a lane's promotion (lanes.go)
	}
	if ended && !wasFinished {
		outcome := phaseLabel(u.rec.Phase)
		o.metrics.updatesEnded.WithLabelValues(strat, outcome).Inc()
		if u.rec.CreatedAt != nil && u.rec.FinishedAt != nil {
			o.metrics.updateSeconds.WithLabelValues(strat, outcome).Observe(
				u.rec.FinishedAt.AsTime().Sub(u.rec.CreatedAt.AsTime()).Seconds())
		}
	}
}

// runPhaseWriter runs the phase writer. A stored change is applied by
// whoever holds mu next (applyBatch, the progress check:
// applyStoredPhasesLocked), or by the writer itself if mu is free: under
// load the writer does not queue for mu behind every stream.
func (c *Coordinator) runPhaseWriter() {
	c.orch.phases.run(c.ctx, func(ctx context.Context, pc *phaseChange) error {
		return c.orch.persistUpdate(ctx, pc.rec, pc.extra...)
	}, func() {
		if c.mu.TryLock() {
			c.orch.applyStoredPhasesLocked()
			c.unlockAndSend()
		}
	})
}

// applyStoredPhasesLocked applies the changes the phase writer has
// written (or forgets those it could not), then moves updates on at once,
// as a progress check would: the next phase may be due (SWITCHED, DONE).
// It runs first in every critical section that may decide a call or a
// phase (applyBatch, the progress check), so a stored change acts as soon
// as the lock is free.
func (o *orchestrator) applyStoredPhasesLocked() {
	if !o.phases.hasStored() {
		return
	}
	applied := false
	for _, sp := range o.phases.takeStored() {
		o.endPhaseLocked(sp.pc, sp.err)
		applied = applied || sp.err == nil
	}
	if applied && o.upd.anyActive() {
		o.progressLocked() // a failed one waits for the next progress check
	}
}

// changePhaseLocked decides a phase change with nothing to apply but the
// record, and queues it.
func (o *orchestrator) changePhaseLocked(u *update, p pb.Phase) {
	o.queuePhaseLocked(o.phaseChangeLocked(u, p, "", nil))
}

// switchLocked decides the switch of the default to the new version: the
// phase and the route are stored in one etcd transaction before it acts.
func (o *orchestrator) switchLocked(u *update, p pb.Phase) *phaseChange {
	routes := make([]storage.Op, len(u.members))
	for i, m := range u.members {
		routes[i] = storage.PutRoute(m.name, m.toName)
	}
	return o.phaseChangeLocked(u, p, "", func() {
		u.switched = true
		u.rec.SwitchedAt = timestamppb.Now()
		for _, m := range u.members {
			o.cat.setRoute(m.svc, m.name, m.to, m.toName)
			o.routing.changed(m.svc, m.name)
		}
		o.releaseHeldLocked(u)
	}, routes...)
}

// deletePinsOps deletes the pins of every member of u.
func deletePinsOps(u *update) []storage.Op {
	ops := make([]storage.Op, len(u.members))
	for i, m := range u.members {
		ops[i] = storage.DeleteServicePins(m.name)
	}
	return ops
}

// finishLocked decides the end of an update: update mode off, pins of the
// service gone, and no rollback left.
//
// The calls held then were parked while the end was being stored (when it
// was decided, none waited for its BEGIN): they are decided once the
// update is over, at the service's default, as every later call of their
// transactions will be. Decided as the update would (a transaction not
// seen begin may have used the old version), such a call would go to the
// old version with its pin deleted and nothing left to keep the
// transaction's next call there.
func (o *orchestrator) finishLocked(u *update, p pb.Phase, reason string) *phaseChange {
	pc := o.phaseChangeLocked(u, p, reason, func() {
		u.rollback = false
		if u.finished() {
			o.setUpdateModeLocked(u, false)
			o.upd.deactivate(u)
		}
		o.releaseHeldLocked(u)
	}, deletePinsOps(u)...)
	pc.rec.RollingBack = false
	return pc
}

// abortLocked decides the abort of an unfinished update. Before the switch
// nothing ran on the new version: the default stays old and held calls go
// there. After a CV switch transactions keep the version they used (pins
// stay), new ones go back to old, and update mode lasts until the new
// version is drained.
func (o *orchestrator) abortLocked(u *update, reason string) (*phaseChange, error) {
	if u.finished() || u.rec.Phase == pb.Phase_PHASE_ABORTED {
		return nil, fmt.Errorf("update %s %w: it is %s already", u.rec.Id, ErrUpdateEnded, u.rec.Phase)
	}
	plan := u.strat.Abort(u.state())
	var extra []storage.Op
	if plan.RouteBack {
		for _, m := range u.members {
			extra = append(extra, storage.PutRoute(m.name, m.fromName))
		}
	}
	if !plan.Rollback {
		extra = append(extra, deletePinsOps(u)...)
	}
	pc := o.phaseChangeLocked(u, pb.Phase_PHASE_ABORTED, reason, func() {
		if plan.Rollback {
			u.rollback = true
		} else {
			o.setUpdateModeLocked(u, false)
			o.upd.deactivate(u)
		}
		for _, m := range u.members {
			if plan.RouteBack {
				o.cat.setRoute(m.svc, m.name, m.from, m.fromName)
			}
			o.routing.changed(m.svc, m.name)
		}
		o.releaseHeldLocked(u)
	}, extra...)
	// Persisted with the phase: a failover resumes the rollback.
	pc.rec.RollingBack = plan.Rollback
	return pc, nil
}

// abortQueuedLocked decides an abort (a timeout) and queues it.
func (o *orchestrator) abortQueuedLocked(u *update, reason string) {
	if pc, err := o.abortLocked(u, reason); err == nil {
		o.queuePhaseLocked(pc)
	}
}

// abort aborts the update id for an operator (see operatorChange) and
// returns the update as aborted.
func (o *orchestrator) abort(ctx context.Context, id, reason string) (*pb.Update, error) {
	return o.operatorChange(ctx, id, "abort", false, func(u *update) (*phaseChange, error) {
		return o.abortLocked(u, reason)
	})
}

// operatorChange makes an operator's change (what: abort, promote, pause,
// resume) to the update id: it waits for a change being stored, then
// stores the one decide returns, not holding the lock meanwhile, moves the
// updates on if progress is set, and returns the update.
func (o *orchestrator) operatorChange(ctx context.Context, id, what string, progress bool, decide func(*update) (*phaseChange, error)) (*pb.Update, error) {
	o.ev.lock()
	for {
		u, err := o.updateLocked(id)
		if err != nil {
			o.ev.unlockAndSend()
			return nil, err
		}
		if pc := u.writing; pc != nil {
			o.ev.unlockAndSend()
			select {
			case <-pc.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-o.ev.context().Done():
				return nil, errShuttingDown
			}
			o.ev.lock()
			continue
		}
		pc, err := decide(u)
		if err != nil {
			o.ev.unlockAndSend()
			return nil, err
		}
		if err := o.storePhaseLocked(pc); err != nil {
			o.ev.unlockAndSend()
			return nil, fmt.Errorf("%w: could not store the %s; try again", ErrUnavailable, what)
		}
		if progress {
			o.progressLocked()
		}
		out := o.snapshotLocked(u)
		o.ev.unlockAndSend()
		return out, nil
	}
}

// progressLocked moves every active update on as far as it can now.
func (o *orchestrator) progressLocked() {
	now := time.Now()
	for u := range o.upd.actives() {
		o.progressOneLocked(u, now)
	}
}

func (o *orchestrator) progressOneLocked(u *update, now time.Time) {
	if u.writing != nil {
		return // switching: the change being stored comes first
	}
	if len(u.held) > 0 {
		// A BEGIN that did not come within BeginWaitTimeout will not: its
		// calls go where a transaction not seen begin goes.
		o.redecideLocked(u, func(h heldCall) bool {
			if !h.waitBegin || now.Sub(h.since) < o.cfg.BeginWaitTimeout {
				return false
			}
			o.metrics.beginWait.WithLabelValues("timeout").Observe(now.Sub(h.since).Seconds())
			o.lg.Debug("call held for its BEGIN timed out", "txn", h.ev.TxnId, "service", h.ev.Service, "waited", now.Sub(h.since))
			return true
		}, false)
	}
	if u.pending {
		return
	}
	// The strategy's phase machine says what to do. A change is stored
	// by the phase writer, off the lock; until it is applied, u.writing
	// parks the calls that need a decision and no other change is
	// decided (the next check, after it is applied, asks again).
	if a := u.strat.Next(u.state(), updateView{o: o, u: u, now: now}); a.Step != strategy.Wait {
		o.stepLocked(u, a, o.queuedLocked)
	}
}

// maxStepsPerCheck bounds the phase changes of one progress check; no
// strategy takes more than three in a row (PREPARING to DONE).
const maxStepsPerCheck = 4

// stepLocked decides one step of u's phase machine and hands the change
// to store: queuedLocked (the phase writer stores it off the lock and it
// is applied later) or storedLocked (stored and applied before it
// returns). It reports whether the change is in force already, so that the
// machine may be asked again.
func (o *orchestrator) stepLocked(u *update, a strategy.Action, store func(*phaseChange) bool) bool {
	var pc *phaseChange
	switch a.Step {
	case strategy.Enter:
		if a.Phase == pb.Phase_PHASE_CANARY {
			pc = o.canaryStepLocked(u, 0, a.Reason)
			break
		}
		pc = o.phaseChangeLocked(u, a.Phase, "", nil)
	case strategy.Promote:
		pc = o.canaryStepLocked(u, int(u.rec.GetCanary().GetStep())+1, a.Reason)
	case strategy.Switch:
		pc = o.switchLocked(u, a.Phase)
		o.canarySwitchLocked(u, pc)
	case strategy.Finish:
		if !u.rollback {
			pc = o.finishLocked(u, a.Phase, "")
			break
		}
		// The end of a rollback keeps the abort's reason.
		o.releaseHeldLocked(u)
		pc = o.finishLocked(u, a.Phase, u.rec.Reason)
		finish := pc.apply
		pc.apply = func() {
			finish()
			o.lg.Info("aborted update drained of the new version", "update", u.rec.Id)
		}
	case strategy.Abandon:
		var err error
		if pc, err = o.abortLocked(u, a.Reason); err != nil {
			return false
		}
	default:
		return false
	}
	return store(pc)
}

// queuedLocked hands a change to the phase writer; it is not in force yet.
func (o *orchestrator) queuedLocked(pc *phaseChange) bool {
	o.queuePhaseLocked(pc)
	return false
}

// storedLocked stores a change and applies it (releasing the lock
// meanwhile); it reports whether etcd took it.
func (o *orchestrator) storedLocked(pc *phaseChange) bool { return o.storePhaseLocked(pc) == nil }

// updateView is what a phase machine observes of u; the coordinator's
// lock is held while it is asked.
type updateView struct {
	o   *orchestrator
	u   *update
	now time.Time
}

func (v updateView) Subject() string        { return v.u.subject() }
func (v updateView) Elapsed() time.Duration { return v.now.Sub(v.u.started) }
func (v updateView) Unacked() int           { return v.o.unackedLocked(v.u) }
func (v updateView) UnackedSessions(limit int) []string {
	return v.o.unackedSessionsLocked(v.u, limit)
}
func (v updateView) Free() bool         { return v.o.eng.FreeSet(v.u.svcs) }
func (v updateView) SwitchesHeld() bool { return v.o.ev.switchHoldLocked() != "" }
func (v updateView) Ready() bool        { return v.o.setConnectedLocked(v.u) }
func (v updateView) WaitingBegin() bool { return v.u.waitingBegin() }

// InUse: Drained means no transaction may use that version again: the
// switch holds cover the transactions this coordinator does not know
// (switchHoldLocked), as they cover a switch.
func (v updateView) InUse(t strategy.Target) bool {
	return v.o.eng.AnySetBlockerUsing(v.u.sideUses(t))
}

func (v updateView) HeldLongest() time.Duration {
	if len(v.u.held) == 0 {
		return 0
	}
	return v.now.Sub(v.u.held[0].since)
}

// setConnectedLocked reports whether an instance of the new version of
// every member of u is connected.
func (o *orchestrator) setConnectedLocked(u *update) bool {
	for _, m := range u.members {
		if !o.connectedLocked(m.svc, m.to) {
			return false
		}
	}
	return true
}

// connectedLocked reports whether an instance of svc@v is connected: an
// update switches only to a version that can take the calls (after a
// failover, once one of its sidecars is back).
func (o *orchestrator) connectedLocked(svc graph.ServiceID, v graph.VersionID) bool {
	for s := range o.sess.ofService(svc) {
		if s.ver == v && s.stream != nil {
			return true
		}
	}
	return false
}

// eachUnackedLocked calls fn for each live session the prepare handshake
// of u waits for (DESIGN.md §4.1): a session whose scope holds the
// service (its service may call it) and that has not acknowledged the
// routing revision that put the service in update mode. A session whose
// scope widens to the service later gets its route in a delta of a newer
// revision, and is counted until it acknowledges one; until then its
// calls to the service are waiting CALLs, decided here. A session that has
// not yet acknowledged its stream's first snapshot counts for every
// update: it may still route by a table of an earlier stream (of another
// leader, whose learned edges this one does not know).
func (o *orchestrator) eachUnackedLocked(u *update, fn func(*session)) {
	seen := make(map[*session]bool)
	for _, m := range u.members {
		for from := range o.cat.callersOf(m.svc) {
			for s := range o.sess.ofService(from) {
				if s.ackedRev < u.prepareRev && !seen[s] {
					seen[s] = true
					fn(s)
				}
			}
		}
	}
	for s := range o.sess.awaitingSnapshot() {
		if !seen[s] && s.ackedRev < s.snapRev {
			fn(s)
		}
	}
}

// unackedLocked counts the sessions eachUnackedLocked names.
func (o *orchestrator) unackedLocked(u *update) int {
	n := 0
	o.eachUnackedLocked(u, func(*session) { n++ })
	return n
}

// unackedSessionsLocked names the first (by instance id) limit of the
// sessions unackedLocked counts.
func (o *orchestrator) unackedSessionsLocked(u *update, limit int) []string {
	var ids []string
	o.eachUnackedLocked(u, func(s *session) { ids = append(ids, s.rec.InstanceId) })
	slices.Sort(ids)
	return ids[:min(limit, len(ids))]
}

// progressTickLocked checks timeouts and draining (every progressEvery).
func (o *orchestrator) progressTickLocked(time.Time) {
	o.applyStoredPhasesLocked()
	if o.upd.anyActive() {
		o.progressLocked()
	}
}

// decideLocked answers a CALL sent with wait: it applies the call at the
// version the update's strategy picks (or at the default when the service
// is not being updated), or holds it (BF). The answer is queued; its pin,
// when the call is a transaction's first use of a service mid-update, is
// committed before the answer is sent.
func (o *orchestrator) decideLocked(s *session, st *stream, ev *pb.Event, to graph.ServiceID) error {
	return o.decideMaybeWaitLocked(s, st, ev, to, true, time.Time{}, time.Time{})
}

// decideMaybeWaitLocked is decideLocked; with mayWait false it never holds
// a call for its transaction's BEGIN (see below).
//
// since is when the call first waited, if it did (zero: now); arrived is
// when it was first decided (zero: now), for its decision's latency.
func (o *orchestrator) decideMaybeWaitLocked(s *session, st *stream, ev *pb.Event, to graph.ServiceID, mayWait bool, since, arrived time.Time) error {
	u := o.upd.active(to)
	if u != nil && u.pending {
		u = nil // not acting yet: the default applies
	}
	if since.IsZero() {
		since = time.Now()
	}
	if arrived.IsZero() {
		arrived = since
	}
	if u != nil && u.writing != nil {
		// Switching: the phase being stored decides this call once it is
		// applied; deciding it under the phase in force now could send it
		// to the old version after the switch was decided (DESIGN.md §4.2).
		u.held = append(u.held, heldCall{s: s, st: st, ev: proto.Clone(ev).(*pb.Event), to: to, since: since,
			switching: true, noWaitBegin: !mayWait, arrived: arrived})
		o.metrics.callHolds[holdPhaseWrite].Inc()
		u.notify()
		return nil
	}
	version := o.cat.defaultVersion(to)
	first := true
	var m *member
	if u != nil {
		m = u.member(to)
		used, ok := o.eng.Used(ev.TxnId, to)
		first = !ok
		if !ok {
			// It used another member of the set: it is on that side
			// (DESIGN.md §4.8).
			used, ok = o.setVersionLocked(u, m, ev.TxnId)
		}
		if !ok && u.strat.Pins() {
			// A transaction this coordinator did not see begin (implicit:
			// known from downstream calls; legacy) may have used the
			// service before: its pin says where, and without one it can
			// only have used the old version (DESIGN.md §6). So it has a
			// past there: BF does not hold it (it could not end, and as
			// legacy it keeps the service from being free), CV keeps it
			// on the version it used.
			info, live := o.eng.Txn(ev.TxnId)
			if (!live || info.Implicit) && !info.Legacy && u.bothLive() && mayWait {
				// Its BEGIN has not arrived (another stream is behind): its
				// root may run on this very service, on either version, and
				// this call re-enter it. Wait for the BEGIN (or for the
				// resync that makes it legacy), at most BeginWaitTimeout.
				u.held = append(u.held, heldCall{s: s, st: st, ev: proto.Clone(ev).(*pb.Event), to: to, since: since, waitBegin: true, arrived: arrived})
				o.metrics.callHolds[holdBegin].Inc()
				u.notify()
				return nil
			}
			if !live || info.Implicit || info.Legacy {
				used, ok = m.from, true
				if v, pinned := o.restoredSetPin(u, m, ev.TxnId); pinned {
					used = v
				}
			}
		}
		d := u.strat.Decide(u.state(), strategy.Call{Used: ok, Assigned: u.canaryAssigned()})
		if d.Hold && o.ev.selfPreservingLocked() {
			// The switch it would wait for is paused: old (DESIGN.md §7).
			d = strategy.Decision{Target: strategy.Old}
		}
		if d.Hold {
			u.held = append(u.held, heldCall{s: s, st: st, ev: proto.Clone(ev).(*pb.Event), to: to, since: since, arrived: arrived})
			o.metrics.callHolds[holdStrategy].Inc()
			u.notify()
			return nil
		}
		switch d.Target {
		case strategy.Old:
			version = m.from
		case strategy.New:
			version = m.to
		default:
			version = used
		}
		if !ok && u.rec.Canary != nil {
			u.countAssigned(version == m.to)
		}
	}
	if err := o.ev.callLocked(s, ev, to, version); err != nil {
		return err
	}
	msg := &pb.CallDecision{Seq: ev.Seq, Version: o.eng.VersionName(version)}
	var pin *storage.Op
	var latency prometheus.Observer
	if u != nil {
		latency = o.metrics.callDecided[u.rec.Strategy]
		u.decided++
		if first && u.strat.Pins() {
			lease := storage.NoLease
			if info, ok := o.eng.Txn(ev.TxnId); ok {
				if owner := o.sess.liveOwner(info.Owner); owner != nil {
					lease = owner.lease
				}
			}
			op := storage.PutPin(m.name, ev.TxnId, msg.Version, lease)
			pin = &op
			o.pendingPins[op.Key()] = pin
			u.pinned++
		} else if p := o.pendingSetPinLocked(u, ev.TxnId); p != nil {
			// A concurrent sub-transaction's first use of the set, its pin
			// not in etcd yet: this answer must not be sent before it is
			// durable, so it carries the same (idempotent) pin.
			pin = p
		}
	}
	o.out = append(o.out, decision{st: st, msg: msg, pin: pin, latency: latency, arrived: arrived})
	return nil
}

// releaseHeldLocked answers the held calls of u: to the new version once
// switched, else (abort) to the old one.
func (o *orchestrator) releaseHeldLocked(u *update) {
	o.redecideLocked(u, func(heldCall) bool { return true }, !u.finished())
}

// redecideLocked decides again the held calls of u that match; with
// mayWait false none is held for its BEGIN again.
func (o *orchestrator) redecideLocked(u *update, match func(heldCall) bool, mayWait bool) {
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
		if o.sess.get(h.s.rec.InstanceId) != h.s || h.s.stream != h.st {
			continue // its sidecar is gone; the call failed there
		}
		var since time.Time // held again: from now, as before
		if h.switching {
			since = h.since // parked: it has waited since then already
		}
		err := o.decideMaybeWaitLocked(h.s, h.st, h.ev, h.to, mayWait && !h.noWaitBegin, since, h.arrived)
		if err != nil {
			o.out = append(o.out, decision{st: h.st, msg: &pb.CallDecision{Seq: h.ev.Seq, Error: err.Error()}})
		}
	}
	u.notify()
}

// releaseBegunLocked decides the calls held for the BEGIN of txn, now
// applied (or txn made legacy by a resync).
func (o *orchestrator) releaseBegunLocked(txn string) {
	for u := range o.upd.actives() {
		if len(u.held) > 0 {
			o.redecideLocked(u, func(h heldCall) bool {
				if !h.waitBegin || h.ev.TxnId != txn {
					return false
				}
				o.metrics.beginWait.WithLabelValues("begun").Observe(time.Since(h.since).Seconds())
				return true
			}, true)
		}
	}
}

// dropHeldLocked forgets the held calls of session s (of its stream st
// only, if st is set): their sidecar is gone, so is the request that made
// them, and a dead call must not count toward --max-block.
func (o *orchestrator) dropHeldLocked(s *session, st *stream) {
	for u := range o.upd.actives() {
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
	out := c.orch.takeDecisions()
	c.mu.Unlock()
	for _, d := range out {
		if d.pin != nil {
			c.orch.pins.add(d)
			continue
		}
		c.sendDecision(d)
	}
}

func (c *Coordinator) sendDecision(d decision) {
	if c.fencedFlag.Load() {
		return // another replica leads: it answers the call when the sidecar reconnects
	}
	err := d.st.send(&pb.CoordinatorMessage{Kind: &pb.CoordinatorMessage_CallDecision{CallDecision: d.msg}})
	if err != nil {
		c.lg.Debug("send call decision", "seq", d.msg.Seq, "error", err)
	} else if d.latency != nil && d.msg.Error == "" {
		d.latency.Observe(time.Since(d.arrived).Seconds())
	}
}

// snapshotLocked returns the update with its live progress.
func (o *orchestrator) snapshotLocked(u *update) *pb.Update {
	out := proto.Clone(u.rec).(*pb.Update)
	if u.finished() {
		return out
	}
	p := &pb.UpdateProgress{
		Blocking:               uint32(o.eng.SetBlockerCount(u.svcs)),
		HeldCalls:              uint32(len(u.held)),
		UnacknowledgedSessions: uint32(o.unackedLocked(u)),
		DecidedCalls:           u.decided,
		PinnedCalls:            u.pinned,
	}
	if p.UnacknowledgedSessions > 0 {
		p.UnacknowledgedSessionIds = o.unackedSessionsLocked(u, strategy.MaxNamed)
	}
	if u.switched {
		old := strategy.Old
		if u.rollback {
			old = strategy.New
		}
		p.OldTransactions = uint32(o.eng.SetBlockersUsing(u.sideUses(old)))
	}
	p.WaitingFor = o.waitingForLocked(u, p, time.Now())
	o.canaryProgressLocked(u, p, time.Now())
	out.Progress = p
	return out
}

// waitingForLocked says what u waits for now and what bounds that wait
// (UpdateProgress.waiting_for); each wait an update can be in is here.
func (o *orchestrator) waitingForLocked(u *update, p *pb.UpdateProgress, now time.Time) string {
	opts := u.state().Options
	left := func(bound time.Duration) string {
		return fmt.Sprintf("%v left", max(bound-now.Sub(u.started), 0).Round(time.Second))
	}
	var why []string
	if hold := o.ev.switchHoldLocked(); hold != "" {
		why = append(why, "switches held ("+hold+"): until each such session re-registers or its lease, or self-preservation's grace, ends")
	}
	switch {
	case u.rollback:
		why = append(why, fmt.Sprintf("%s that used %s to end (each ends, or its session's lease expires)",
			count(int(p.OldTransactions), "transaction", "transactions"), u.sideNames(strategy.New)))
	case u.rec.Phase == pb.Phase_PHASE_PREPARING && p.UnacknowledgedSessions > 0:
		why = append(why, fmt.Sprintf("%s to acknowledge update mode (%s): aborts at prepare-timeout %v, %s",
			count(int(p.UnacknowledgedSessions), "session", "sessions"), strategy.Named(p.UnacknowledgedSessionIds, int(p.UnacknowledgedSessions)),
			opts.PrepareTimeout, left(opts.PrepareTimeout)))
	case u.rec.Phase == pb.Phase_PHASE_PREPARING && u.updateMode && !o.setConnectedLocked(u):
		why = append(why, fmt.Sprintf("an instance of %s to connect: aborts at prepare-timeout %v, %s",
			u.sideNames(strategy.New), opts.PrepareTimeout, left(opts.PrepareTimeout)))
	case u.rec.Phase == pb.Phase_PHASE_WAITING:
		w := fmt.Sprintf("%s to be free (%s)", u.subject(), count(int(p.Blocking), "transaction blocks it", "transactions block it"))
		if opts.Timeout > 0 {
			w += fmt.Sprintf(": aborts at timeout %v, %s", opts.Timeout, left(opts.Timeout))
		} else {
			w += ": no timeout (stored before updates had one), so until it is free or aborted"
		}
		why = append(why, w)
		if len(u.held) > 0 && opts.MaxBlock > 0 {
			why = append(why, fmt.Sprintf("%s, the oldest for %v: aborts at max-block %v",
				count(len(u.held), "call held", "calls held"), now.Sub(u.held[0].since).Round(time.Millisecond), opts.MaxBlock))
		}
	case u.rec.Phase == pb.Phase_PHASE_CANARY:
		why = append(why, o.canaryWaitingLocked(u, now))
	case u.rec.Phase == pb.Phase_PHASE_DRAINING:
		why = append(why, fmt.Sprintf("%s that used %s to end (each ends, or its session's lease expires)",
			count(int(p.OldTransactions), "transaction", "transactions"), u.sideNames(strategy.Old)))
	}
	if n := u.waitingBeginCount(); n > 0 {
		why = append(why, fmt.Sprintf("%s for their transaction's BEGIN: each at most %v (--begin-wait-timeout)", count(n, "call waiting", "calls waiting"), o.cfg.BeginWaitTimeout))
	}
	return strings.Join(why, "; ")
}
