package strategy

import (
	"errors"
	"fmt"
	"strings"
	"time"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Strategy is one update strategy, whole: where a call to a service being
// updated goes (Decide) and its phase machine (Next, Abort, Resume). The
// orchestrator drives every strategy through it and holds no strategy
// check of its own. The services being updated together are "the set"
// (one service today, DESIGN §4.8 later): targets name the set's old or
// new versions, and observations are about the set.
type Strategy interface {
	// Kind is the strategy's protocol value.
	Kind() Kind
	// Options completes an update's options with the strategy's defaults.
	Options(o Options) Options
	// UpdateMode reports whether sidecars must ask before every call to
	// the set (and acknowledge that first): every strategy but the
	// baseline.
	UpdateMode() bool
	// Pins reports whether a transaction's first use of the set is
	// committed (its pin) before the call is answered, so that the
	// transaction stays on that side across a failover.
	Pins() bool
	// Decide says where a transaction's call to a service of the set goes.
	Decide(s State, c Call) Decision
	// Next is the phase machine's step: what to do now, given the update's
	// state and what the orchestrator observes. The orchestrator applies
	// the action (persisting its phase first) and asks again, until Wait.
	Next(s State, o Observation) Action
	// Abort says what aborting in state s does.
	Abort(s State) AbortPlan
}

// ErrNoStrategy is returned by For for a kind no strategy is registered as.
var ErrNoStrategy = errors.New("strategy: no such strategy")

// registry holds every strategy; adding one is one line here.
var registry = map[Kind]Strategy{
	WF:    wf{},
	BF:    bf{},
	CV:    cv{},
	NAIVE: naive{},
}

// For returns the strategy of kind k.
func For(k Kind) (Strategy, error) {
	if s, ok := registry[k]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("%w: %v: want wf, bf, cv or naive", ErrNoStrategy, k)
}

// Options are an update's bounds.
type Options struct {
	// Timeout aborts an update still PREPARING or WAITING after it (WF,
	// BF); zero is none.
	Timeout time.Duration
	// MaxBlock aborts an update whose oldest held call waited longer; zero
	// is none (BF's default is DefaultMaxBlock).
	MaxBlock time.Duration
	// PrepareTimeout aborts an update still PREPARING after it, naming the
	// sessions that did not acknowledge update mode; zero is none (the
	// coordinator always sets one: its --prepare-timeout by default).
	PrepareTimeout time.Duration
}

// MaxNamed bounds the sessions a reason or a progress report names; the
// rest are counted.
const MaxNamed = 10

// Named lists names, the first MaxNamed of n in all, and says how many more
// there are: "a-1, b-1 and 3 more".
func Named(names []string, n int) string {
	if len(names) > MaxNamed {
		names = names[:MaxNamed]
	}
	out := strings.Join(names, ", ")
	if more := n - len(names); more > 0 {
		out += fmt.Sprintf(" and %d more", more)
	}
	return out
}

// DefaultMaxBlock bounds how long BF holds a call when the update says not.
const DefaultMaxBlock = 5 * time.Second

// State is an update's persisted state, as the strategy sees it.
type State struct {
	Phase pb.Phase
	// Options are the update's bounds.
	Options Options
	// Switched: the set's defaults are the new versions.
	Switched bool
	// RollingBack: aborted after a switch; the defaults are back at the
	// old versions, transactions keep the side they used, and the update
	// lasts until no transaction may use the new versions again.
	RollingBack bool
	// Canary is set for a canary update (CV with weights, canary.go).
	Canary *Canary
}

// Resume is the state of an update read back from etcd by a new leader:
// its phase says whether it had switched; an ABORTED update stored as
// rolling back resumes its rollback.
func Resume(phase pb.Phase, rollingBack bool, o Options) State {
	s := State{Phase: phase, Options: o}
	switch phase {
	case pb.Phase_PHASE_DRAINING, pb.Phase_PHASE_SWITCHED:
		s.Switched = true
	case pb.Phase_PHASE_ABORTED:
		s.Switched, s.RollingBack = rollingBack, rollingBack
	}
	return s
}

// Finished reports whether an update in state s is over: DONE or FAILED,
// or ABORTED with no rollback left to drain.
func (s State) Finished() bool {
	switch s.Phase {
	case pb.Phase_PHASE_DONE, pb.Phase_PHASE_FAILED:
		return true
	case pb.Phase_PHASE_ABORTED:
		return !s.RollingBack
	}
	return false
}

// Call is what the orchestrator knows of a transaction calling a service
// of the set.
type Call struct {
	// Used: the transaction used, or runs on, a service of the set
	// (hasPast); it must stay on the versions it used.
	Used bool
	// Assigned counts the transactions new to the set that the current
	// canary step assigned a version so far (a canary's weights).
	Assigned uint64
}

// Target names where a call goes.
type Target uint8

const (
	// Old is the set's old versions (the defaults before the update).
	Old Target = iota
	// New is the set's new versions.
	New
	// Same is the versions the transaction already used.
	Same
)

func (t Target) String() string {
	switch t {
	case Old:
		return "old"
	case New:
		return "new"
	case Same:
		return "same"
	}
	return fmt.Sprintf("Target(%d)", uint8(t))
}

// Decision says where a call goes; Hold means nowhere yet (BF): the call
// waits for the switch, or the abort.
type Decision struct {
	Target Target
	Hold   bool
}

// Observation is what the orchestrator observes of an update and the set,
// atomically with event application. A phase machine asks only for what its
// phase needs: some answers cost a scan of the sessions.
type Observation interface {
	// Subject names the set in reasons ("auth-service").
	Subject() string
	// Elapsed is the time since the update was created.
	Elapsed() time.Duration
	// Unacked counts the sessions that can call the set and have not
	// acknowledged update mode.
	Unacked() int
	// UnackedSessions names the first (at most limit) of them, in a stable
	// order.
	UnackedSessions(limit int) []string
	// Free: no live transaction used a service of the set and may still
	// call one (DESIGN §4.8; free(S) for one service).
	Free() bool
	// InUse(Old): a live transaction runs on, or used and may call again,
	// the old versions (CV is not drained); InUse(New) the same of the new
	// versions (a rollback is not drained).
	InUse(t Target) bool
	// SwitchesHeld: the coordinator holds every switch and drain end (a
	// failover's resync, self-preservation).
	SwitchesHeld() bool
	// Ready: an instance of every new version is connected.
	Ready() bool
	// WaitingBegin: a call waits for its transaction's BEGIN; ending the
	// update now would decide it as for a transaction not seen begin.
	WaitingBegin() bool
	// HeldLongest is how long the oldest held call has waited (zero: none).
	HeldLongest() time.Duration
}

// Step is the kind of an Action.
type Step uint8

const (
	// Wait: nothing to do now; ask again at the next event or tick.
	Wait Step = iota
	// Enter persists Phase and changes nothing else.
	Enter
	// Switch persists Phase with the set's defaults moved to the new
	// versions, then routes by them and releases the held calls.
	Switch
	// Finish persists Phase (DONE, or ABORTED at a rollback's end), then
	// ends update mode, deletes the set's pins and releases held calls.
	Finish
	// Abandon aborts the update with Reason (a bound passed): the
	// orchestrator carries out the strategy's Abort plan.
	Abandon
	// Promote persists a canary's next step (Reason names it) and
	// changes nothing else: the next weight applies once stored.
	Promote
)

func (s Step) String() string {
	switch s {
	case Wait:
		return "wait"
	case Enter:
		return "enter"
	case Switch:
		return "switch"
	case Finish:
		return "finish"
	case Abandon:
		return "abandon"
	case Promote:
		return "promote"
	}
	return fmt.Sprintf("Step(%d)", uint8(s))
}

// Action is one step of a phase machine.
type Action struct {
	Step   Step
	Phase  pb.Phase // for Enter, Switch, Finish
	Reason string   // for Abandon (a Finish at a rollback's end keeps the abort's)
}

func (a Action) String() string {
	if a.Step == Wait {
		return "wait"
	}
	if a.Reason != "" {
		return fmt.Sprintf("%v %v (%s)", a.Step, a.Phase, a.Reason)
	}
	return fmt.Sprintf("%v %v", a.Step, a.Phase)
}

// AbortPlan is what aborting does.
type AbortPlan struct {
	// RouteBack: the defaults go back to the old versions (the update had
	// switched).
	RouteBack bool
	// Rollback: transactions keep the side they used (pins stay) and the
	// update lasts, ABORTED and rolling back, until the new versions are
	// drained; otherwise it ends at once, pins deleted.
	Rollback bool
}

var wait = Action{Step: Wait}

// prepared is the PREPARING step shared by the strategies with update
// mode: wait for every acknowledgement, within the prepare timeout and the
// timeout. An abort names the sessions that did not acknowledge.
func prepared(s State, o Observation) (Action, bool) {
	n := o.Unacked()
	if n == 0 {
		return Action{}, true
	}
	if t := s.Options.PrepareTimeout; t > 0 && o.Elapsed() > t {
		return Action{Step: Abandon, Reason: fmt.Sprintf("prepare-timeout: %d sessions did not acknowledge update mode within %v: %s",
			n, t, Named(o.UnackedSessions(MaxNamed), n))}, false
	}
	if t := s.Options.Timeout; t > 0 && o.Elapsed() > t {
		return Action{Step: Abandon, Reason: fmt.Sprintf("timeout: sessions did not all enter update mode within %v: %d did not: %s",
			t, n, Named(o.UnackedSessions(MaxNamed), n))}, false
	}
	return wait, false
}

// notReady is the step of an update that would switch but no instance of
// the new version is connected: wait, within the prepare timeout.
func notReady(s State, o Observation) Action {
	if t := s.Options.PrepareTimeout; t > 0 && o.Elapsed() > t {
		return Action{Step: Abandon, Reason: fmt.Sprintf("prepare-timeout: no instance of the new version of %s connected within %v", o.Subject(), t)}
	}
	return wait
}

// rolledBack is the step of a rollback: it ends, ABORTED (keeping the
// abort's reason), once no transaction may use the new versions again.
func rolledBack(o Observation) Action {
	if !o.InUse(New) && !o.SwitchesHeld() && !o.WaitingBegin() {
		return Action{Step: Finish, Phase: pb.Phase_PHASE_ABORTED}
	}
	return wait
}

// switchedDone ends a switched update with nothing left to drain.
func switchedDone(o Observation) Action {
	if o.WaitingBegin() {
		return wait
	}
	return Action{Step: Finish, Phase: pb.Phase_PHASE_DONE}
}

// abortPlan is the plan of the strategies that pin: after a switch, a
// rollback that drains the new versions.
func abortPlan(s State) AbortPlan {
	return AbortPlan{RouteBack: s.Switched, Rollback: s.Switched}
}

// waitForFree is the phase machine of WF and BF: switch the instant the
// set is free, within the timeout and the max-block bound.
func waitForFree(s State, o Observation) Action {
	switch s.Phase {
	case pb.Phase_PHASE_PREPARING:
		if a, ok := prepared(s, o); !ok {
			return a
		}
		return Action{Step: Enter, Phase: pb.Phase_PHASE_WAITING}
	case pb.Phase_PHASE_WAITING:
		if o.Free() && !o.SwitchesHeld() && o.Ready() {
			return Action{Step: Switch, Phase: pb.Phase_PHASE_SWITCHED}
		}
		if t := s.Options.Timeout; t > 0 && o.Elapsed() > t {
			return Action{Step: Abandon, Reason: fmt.Sprintf("timeout: %s was not free within %v", o.Subject(), t)}
		}
		if mb := s.Options.MaxBlock; mb > 0 && o.HeldLongest() > mb {
			return Action{Step: Abandon, Reason: fmt.Sprintf("max-block: a call was held longer than %v", mb)}
		}
	case pb.Phase_PHASE_SWITCHED:
		return switchedDone(o)
	}
	return wait
}

// decideBeforeSwitch is where WF and BF send a call, given where one that
// has not used the set goes before the switch.
func decideBeforeSwitch(s State, c Call, fresh Decision) Decision {
	switch {
	case c.Used:
		// The transaction stays on what it used (version consistency).
		return Decision{Target: Same}
	case s.RollingBack:
		return Decision{Target: Old}
	case s.Switched:
		return Decision{Target: New}
	}
	return fresh
}

// wf waits for freeness: calls keep going to the old versions until the
// set is free, then the defaults switch at once (DESIGN §4.2).
type wf struct{}

func (wf) Kind() Kind                { return WF }
func (wf) Options(o Options) Options { return o }
func (wf) UpdateMode() bool          { return true }
func (wf) Pins() bool                { return true }
func (wf) Decide(s State, c Call) Decision {
	return decideBeforeSwitch(s, c, Decision{Target: Old})
}
func (wf) Next(s State, o Observation) Action {
	if s.RollingBack {
		return rolledBack(o)
	}
	return waitForFree(s, o)
}
func (wf) Abort(s State) AbortPlan { return abortPlan(s) }

// bf blocks for freeness: a call of a transaction with no past on the set
// is held until the switch; the rest run on what they used (DESIGN §4.3).
type bf struct{}

func (bf) Kind() Kind { return BF }
func (bf) Options(o Options) Options {
	if o.MaxBlock == 0 {
		o.MaxBlock = DefaultMaxBlock
	}
	return o
}
func (bf) UpdateMode() bool { return true }
func (bf) Pins() bool       { return true }
func (bf) Decide(s State, c Call) Decision {
	return decideBeforeSwitch(s, c, Decision{Hold: true})
}
func (bf) Next(s State, o Observation) Action {
	if s.RollingBack {
		return rolledBack(o)
	}
	return waitForFree(s, o)
}
func (bf) Abort(s State) AbortPlan { return abortPlan(s) }

// cv runs both versions: the defaults switch as soon as every session is
// in update mode, transactions that used the set stay where they were, and
// the update is DONE once the old versions are drained (DESIGN §4.4).
type cv struct{}

func (cv) Kind() Kind                { return CV }
func (cv) Options(o Options) Options { return o }
func (cv) UpdateMode() bool          { return true }
func (cv) Pins() bool                { return true }
func (cv) Decide(s State, c Call) Decision {
	if s.Canary != nil {
		return canaryDecide(s, c)
	}
	return decideBeforeSwitch(s, c, Decision{Target: Old})
}

// cvPrepared says what CV, and its canary, wait for in PREPARING before
// they act: prepared's acknowledgements, switches no longer held (bounded
// by the resync, each missing session's lease, and by self-preservation's
// grace), and the new version ready; ok once nothing is left.
func cvPrepared(s State, o Observation) (Action, bool) {
	if a, ok := prepared(s, o); !ok {
		return a, false
	}
	if o.SwitchesHeld() {
		return wait, false
	}
	if !o.Ready() {
		return notReady(s, o), false
	}
	return Action{}, true
}

func (cv) Next(s State, o Observation) Action {
	if s.RollingBack {
		return rolledBack(o)
	}
	if s.Canary != nil && (s.Phase == pb.Phase_PHASE_PREPARING || s.Phase == pb.Phase_PHASE_CANARY) {
		return canaryNext(s, o)
	}
	switch s.Phase {
	case pb.Phase_PHASE_PREPARING:
		if a, ok := cvPrepared(s, o); !ok {
			return a
		}
		return Action{Step: Switch, Phase: pb.Phase_PHASE_DRAINING}
	case pb.Phase_PHASE_DRAINING:
		if !o.InUse(Old) && !o.SwitchesHeld() && !o.WaitingBegin() {
			return Action{Step: Enter, Phase: pb.Phase_PHASE_SWITCHED}
		}
	case pb.Phase_PHASE_SWITCHED:
		return switchedDone(o)
	}
	return wait
}
func (cv) Abort(s State) AbortPlan {
	if s.Canary != nil {
		return canaryAbort(s)
	}
	return abortPlan(s)
}

// naive is the baseline of benchmarks and tests: the defaults switch at
// once, with no update mode and no pins (DESIGN §4.6); it produces
// violations under load, which proves the checker sees them.
type naive struct{}

func (naive) Kind() Kind                { return NAIVE }
func (naive) Options(o Options) Options { return o }
func (naive) UpdateMode() bool          { return false }
func (naive) Pins() bool                { return false }
func (naive) Decide(s State, _ Call) Decision {
	if s.Switched && !s.RollingBack {
		return Decision{Target: New}
	}
	return Decision{Target: Old}
}
func (naive) Next(s State, _ Observation) Action {
	switch s.Phase {
	case pb.Phase_PHASE_PREPARING:
		return Action{Step: Switch, Phase: pb.Phase_PHASE_SWITCHED}
	case pb.Phase_PHASE_SWITCHED:
		return Action{Step: Finish, Phase: pb.Phase_PHASE_DONE}
	}
	return wait
}
func (naive) Abort(s State) AbortPlan { return AbortPlan{RouteBack: s.Switched} }
