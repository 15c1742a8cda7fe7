package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/strategy"
)

// Canary updates (DESIGN.md §4.7): CV with weights. The plan, the current
// step, the paused flag and the transactions each step assigned to each
// version are in the update record (pb.Update.canary), so a new leader
// resumes the canary at its step with its weight (the assignments
// themselves are CV's first-use pins). The counts of the current step live
// in that record and are stored with every change of the update: none is
// assigned while a change is being stored (the calls to the service are
// parked), so a stored step's counts are final. The analysis windows are
// written behind (canary_store.go): a new leader continues them.
//
// A canary of a set (DESIGN.md §4.8) assigns a transaction at its first
// use of any member, for the whole set (decideMaybeWaitLocked: a
// transaction that used a member is on that side), and counts it once;
// the analysis sums the outcomes of every member per side.

// ErrNotInCanary: a promote, pause or resume of an update that is not in a
// canary step (not a canary, not begun yet, over, or not in the state the
// request needs).
var ErrNotInCanary = errors.New("not in a canary step")

// maxAnalysisWindow bounds an analysis's window.
const maxAnalysisWindow = time.Hour

// maxCanaryHistory bounds an update's history that pause and resume may
// grow (steps and phases add at most MaxCanarySteps + 6 entries).
const maxCanaryHistory = 128

// canaryRun is what a canary update keeps beyond its record: the outcome
// windows of both versions. Guarded by Coordinator.mu.
type canaryRun struct {
	limits   strategy.Limits
	old, new *strategy.Window
	// dirty: the windows changed since the analysis writer took them.
	dirty bool
}

func newCanaryRun(c *pb.Canary) *canaryRun {
	l := strategy.Limits{MaxErrorRate: c.GetMaxErrorRate(), MaxP99: c.GetMaxP99().AsDuration(),
		Window: c.GetAnalysisWindow().AsDuration()}
	return &canaryRun{limits: l, old: strategy.NewWindow(l.Window), new: strategy.NewWindow(l.Window)}
}

// checkCanary validates the canary options of req and returns the plan to
// store (nil: no canary).
func checkCanary(req *pb.StartUpdateRequest, kind pb.Strategy) (*pb.Canary, error) {
	steps := req.GetCanarySteps()
	if len(steps) == 0 {
		if req.GetStepInterval().AsDuration() != 0 || req.GetMaxErrorRate() != 0 || req.GetMaxP99().AsDuration() != 0 || req.GetAnalysisWindow() != nil {
			return nil, fmt.Errorf("%w: step_interval, max_error_rate, max_p99 and analysis_window need canary_steps", ErrInvalidArgument)
		}
		return nil, nil
	}
	if kind != strategy.CV {
		return nil, fmt.Errorf("%w: a canary is a cv update: strategy %s has no weights", ErrInvalidArgument, strategy.Name(kind))
	}
	if err := strategy.CheckSteps(steps); err != nil {
		return nil, fmt.Errorf("%w: canary_steps: %w", ErrInvalidArgument, err)
	}
	for _, d := range []struct {
		name string
		in   *durationpb.Duration
	}{{"step_interval", req.GetStepInterval()}, {"max_p99", req.GetMaxP99()}, {"analysis_window", req.GetAnalysisWindow()}} {
		if d.in == nil {
			continue
		}
		if err := d.in.CheckValid(); err != nil || d.in.AsDuration() < 0 {
			return nil, fmt.Errorf("%w: %s must be a non-negative duration", ErrInvalidArgument, d.name)
		}
	}
	if r := req.GetMaxErrorRate(); !(r >= 0 && r <= 1) {
		return nil, fmt.Errorf("%w: max_error_rate %v: want 0 to 1 (a share of the calls)", ErrInvalidArgument, r)
	}
	window := req.GetAnalysisWindow().AsDuration()
	if window == 0 {
		window = strategy.DefaultAnalysisWindow
	}
	if window < time.Second || window > maxAnalysisWindow {
		return nil, fmt.Errorf("%w: analysis_window %v: want 1s to %v", ErrInvalidArgument, window, maxAnalysisWindow)
	}
	return &pb.Canary{Steps: steps, StepInterval: durationpb.New(req.GetStepInterval().AsDuration()),
		MaxErrorRate: req.GetMaxErrorRate(), MaxP99: durationpb.New(req.GetMaxP99().AsDuration()),
		AnalysisWindow: durationpb.New(window)}, nil
}

// canaryState is the canary of u as its strategy sees it (nil: none).
func (u *update) canaryState() *strategy.Canary {
	c := u.rec.GetCanary()
	if c == nil {
		return nil
	}
	return &strategy.Canary{Steps: c.Steps, Step: int(c.Step), Paused: c.Paused, Interval: c.StepInterval.AsDuration()}
}

// bothLive reports whether transactions of u may run on either version:
// switched, or in a canary step (which assigns some to the new one).
func (u *update) bothLive() bool {
	return u.switched || u.rec.Phase == pb.Phase_PHASE_CANARY || (u.rollback && u.rec.GetCanary() != nil)
}

// canaryAssigned is how many transactions the current step has assigned.
func (u *update) canaryAssigned() uint64 {
	if s := u.currentStep(); s != nil {
		return s.OldTransactions + s.NewTransactions
	}
	return 0
}

// currentStep is the record's entry of the step in force (nil: none).
func (u *update) currentStep() *pb.CanaryStep {
	c := u.rec.GetCanary()
	if c == nil || len(c.StepsServed) == 0 {
		return nil
	}
	return c.StepsServed[len(c.StepsServed)-1]
}

// countAssignedLocked counts a transaction new to the service that u's
// canary (or, after its switch, its last step) gave version toNew or not.
func (u *update) countAssigned(toNew bool) {
	if u.rollback || !(u.rec.Phase == pb.Phase_PHASE_CANARY || u.switched) {
		return
	}
	s := u.currentStep()
	if s == nil {
		return
	}
	if toNew {
		s.NewTransactions++
	} else {
		s.OldTransactions++
	}
}

// canaryStepLocked decides the move of u's canary to step (its first step
// when the canary begins) and returns the change to store: the history
// notes it (note), the record's reason stays empty.
func (o *orchestrator) canaryStepLocked(u *update, step int, note string) *phaseChange {
	pc := o.phaseChangeLocked(u, pb.Phase_PHASE_CANARY, note, nil)
	pc.rec.Reason = u.rec.Reason
	c := pc.rec.Canary
	now := timestamppb.Now()
	c.Step, c.StepStartedAt = uint32(step), now
	c.StepsServed = append(c.StepsServed, &pb.CanaryStep{Percent: c.Steps[step], StartedAt: now})
	return pc
}

// canarySwitchLocked completes a switch of a canary update (pc, decided by
// switchLocked): its last step (100) begins with it.
func (o *orchestrator) canarySwitchLocked(u *update, pc *phaseChange) {
	c := pc.rec.GetCanary()
	if c == nil {
		return
	}
	now := timestamppb.Now()
	c.Step, c.StepStartedAt = uint32(len(c.Steps)-1), now
	c.StepsServed = append(c.StepsServed, &pb.CanaryStep{Percent: 100, StartedAt: now})
	pc.rec.History[len(pc.rec.History)-1].Reason = fmt.Sprintf("step %d: 100%%: the switch", len(c.Steps))
}

// canaryControl promotes, pauses or resumes the canary update id for an
// operator (see operatorChange) and returns the update.
func (o *orchestrator) canaryControl(ctx context.Context, id, what string) (*pb.Update, error) {
	return o.operatorChange(ctx, id, what, true, func(u *update) (*phaseChange, error) {
		return o.canaryControlLocked(u, what)
	})
}

// canaryControlLocked decides an operator's promote, pause or resume of u.
func (o *orchestrator) canaryControlLocked(u *update, what string) (*phaseChange, error) {
	c := u.rec.GetCanary()
	if c == nil {
		return nil, fmt.Errorf("update %s is %w: it is not a canary (start it with canary steps)", u.rec.Id, ErrNotInCanary)
	}
	if u.rec.Phase != pb.Phase_PHASE_CANARY || u.rollback {
		return nil, fmt.Errorf("update %s is %w: it is %s", u.rec.Id, ErrNotInCanary, u.rec.Phase)
	}
	switch what {
	case "promote":
		a := strategy.Promotion(u.state())
		if a.Step == strategy.Switch {
			if hold := o.ev.switchHoldLocked(); hold != "" {
				return nil, fmt.Errorf("%w: the next step is the switch, and switches are held (%s); try again later", ErrUnavailable, hold)
			}
			pc := o.switchLocked(u, a.Phase)
			o.canarySwitchLocked(u, pc)
			pc.rec.History[len(pc.rec.History)-1].Reason += " (promoted by an operator)"
			return pc, nil
		}
		return o.canaryStepLocked(u, int(c.Step)+1, a.Reason+" (promoted by an operator)"), nil
	case "pause", "resume":
		if n := len(u.rec.History); n >= maxCanaryHistory {
			return nil, fmt.Errorf("update %s: %w: its history has %d entries, the most a canary keeps (each pause and resume adds one): promote or abort it", u.rec.Id, ErrQuota, n)
		}
		if c.Paused == (what == "pause") {
			return nil, fmt.Errorf("update %s is %w to %s: it is paused=%v already", u.rec.Id, ErrNotInCanary, what, c.Paused)
		}
		pc := o.phaseChangeLocked(u, pb.Phase_PHASE_CANARY, fmt.Sprintf("%sd by an operator at step %d: %d%%", what, c.Step+1, c.Steps[c.Step]), nil)
		pc.rec.Reason = u.rec.Reason
		pc.rec.Canary.Paused = what == "pause"
		if what == "resume" {
			pc.rec.Canary.StepStartedAt = timestamppb.Now() // the interval counts from now
		}
		return pc, nil
	}
	return nil, fmt.Errorf("%w: canary control %q", ErrInvalidArgument, what)
}

// observeOutcomeLocked counts the outcome of a call (its RETURN, of
// sub-transaction sub of txn, still running) for the analysis of a canary
// of the service it ran at.
func (o *orchestrator) observeOutcomeLocked(txn string, sub graph.SubID, out *pb.CallOutcome) {
	at, v, ok := o.eng.SubAt(txn, sub)
	if !ok {
		return
	}
	u := o.upd.active(at)
	if u == nil || u.canary == nil || u.rec.Phase != pb.Phase_PHASE_CANARY {
		return
	}
	m := u.member(at)
	if m == nil {
		return
	}
	w := u.canary.old
	switch v {
	case m.from:
	case m.to:
		w = u.canary.new
	default:
		return
	}
	latency := time.Duration(-1)
	if out.Latency != nil {
		latency = out.Latency.AsDuration()
	}
	w.Add(time.Now(), out.Class == pb.OutcomeClass_OUTCOME_CLASS_SERVER_ERROR, latency)
	o.analysisDirtyLocked(u.canary)
}

// StepElapsed: the canary's current step began (or was resumed) that long ago.
func (v updateView) StepElapsed() time.Duration {
	return v.now.Sub(v.u.rec.GetCanary().GetStepStartedAt().AsTime())
}

// Worse: the analysis finds the new version worse over its window.
func (v updateView) Worse() (bool, string) {
	c := v.u.canary
	if c == nil || !c.limits.On() {
		return false, ""
	}
	return strategy.Judge(c.limits, c.old.Stats(v.now), c.new.Stats(v.now))
}

// canaryProgressLocked adds a canary's analysis to the live progress p.
func (o *orchestrator) canaryProgressLocked(u *update, p *pb.UpdateProgress, now time.Time) {
	c := u.canary
	if c == nil || u.rec.Phase != pb.Phase_PHASE_CANARY {
		return
	}
	calls := func(s strategy.Stats) *pb.VersionCalls {
		return &pb.VersionCalls{Calls: s.Calls, Errors: s.Errors, P99: durationpb.New(s.P99)}
	}
	p.CanaryAnalysis = &pb.CanaryAnalysis{OldVersion: calls(c.old.Stats(now)), NewVersion: calls(c.new.Stats(now)),
		Window: durationpb.New(c.limits.Window)}
}

// canaryWaitingLocked says what a canary step waits for, and its bound.
func (o *orchestrator) canaryWaitingLocked(u *update, now time.Time) string {
	c := u.rec.GetCanary()
	if c == nil {
		return ""
	}
	at := fmt.Sprintf("canary step %d of %d (%d%% of new transactions to %s)", c.Step+1, len(c.Steps), c.Steps[c.Step], u.sideNames(strategy.New))
	switch iv := c.StepInterval.AsDuration(); {
	case c.Paused:
		return at + ": paused, until resumed, promoted or aborted"
	case iv == 0:
		return at + ": manual, until promoted or aborted"
	default:
		left := max(iv-now.Sub(c.StepStartedAt.AsTime()), 0).Round(time.Second)
		return fmt.Sprintf("%s: the next step in %v (--step-interval %v)", at, left, iv)
	}
}
