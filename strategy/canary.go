package strategy

import (
	"errors"
	"fmt"
	"time"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// A canary is CV with weights (DESIGN §4.7): after PREPARING the update is
// in CANARY, where the default stays the old version and a transaction
// new to the set is assigned the new version with the current step's
// weight; once assigned, it stays there (its pin, as CV's). The step
// moves on after its interval (or by an operator's promote); reaching the
// last step (100) is the switch, and the update goes on as CV, draining the
// old version. Aborting in CANARY is a rollback: new transactions go to the
// old version, those assigned the new one finish there.

// Canary is a canary update's plan and where it stands, as persisted.
type Canary struct {
	// Steps are the weights in percent, increasing, the last 100.
	Steps []uint32
	// Step is the current step, an index into Steps (in CANARY).
	Step int
	// Paused: the step does not end on its own.
	Paused bool
	// Interval is how long a step lasts; zero: manual.
	Interval time.Duration
}

// MaxCanarySteps bounds a canary's steps.
const MaxCanarySteps = 20

// ErrBadCanary is wrapped by CheckSteps' errors.
var ErrBadCanary = errors.New("strategy: bad canary")

// CheckSteps says whether steps is a canary's plan: 1 to MaxCanarySteps
// weights, each 1 to 100, strictly increasing, the last 100 (the step
// that switches).
func CheckSteps(steps []uint32) error {
	if len(steps) == 0 || len(steps) > MaxCanarySteps {
		return fmt.Errorf("%w: %d steps: want 1 to %d", ErrBadCanary, len(steps), MaxCanarySteps)
	}
	for i, w := range steps {
		if w < 1 || w > 100 {
			return fmt.Errorf("%w: step %d is %d%%: want 1 to 100", ErrBadCanary, i+1, w)
		}
		if i > 0 && w <= steps[i-1] {
			return fmt.Errorf("%w: step %d (%d%%) is not above step %d (%d%%): weights must increase", ErrBadCanary, i+1, w, i, steps[i-1])
		}
	}
	if last := steps[len(steps)-1]; last != 100 {
		return fmt.Errorf("%w: the last step is %d%%: it must be 100 (the switch)", ErrBadCanary, last)
	}
	return nil
}

// Weight is the current step's weight in percent.
func (c *Canary) Weight() uint32 { return c.Steps[c.Step] }

// NextIsSwitch reports whether the next step is the last (100): moving
// to it is the switch.
func (c *Canary) NextIsSwitch() bool { return c.Step+1 >= len(c.Steps)-1 }

// AssignNew says whether the transaction that is the (n+1)th new to the
// set in the current step, n having been assigned before it, goes to the
// new version at weight w (percent): counter-based, so that after any n
// transactions of a step exactly floor(n*w/100) went to the new version
// (DESIGN §4.7: the served weights are accurate to one transaction).
func AssignNew(n uint64, w uint32) bool {
	return (n+1)*uint64(w)/100 > n*uint64(w)/100
}

// CanaryObservation is what a canary's phase machine observes beyond
// Observation; the orchestrator's view implements it.
type CanaryObservation interface {
	// StepElapsed is the time since the current step began (or was
	// resumed).
	StepElapsed() time.Duration
	// Worse says whether the analysis finds the new version worse than
	// the old one over its window, and why.
	Worse() (bool, string)
}

// canaryDecide is where CV sends a call of a canary: a transaction new to
// the set, in CANARY, by the current weight (c.Assigned counts those the
// step assigned before it).
func canaryDecide(s State, c Call) Decision {
	switch {
	case c.Used:
		return Decision{Target: Same}
	case s.RollingBack:
		return Decision{Target: Old}
	case s.Switched:
		return Decision{Target: New}
	case s.Phase == pb.Phase_PHASE_CANARY && AssignNew(c.Assigned, s.Canary.Weight()):
		return Decision{Target: New}
	}
	return Decision{Target: Old}
}

// canaryNext is CV's phase machine for a canary.
func canaryNext(s State, o Observation) Action {
	switch s.Phase {
	case pb.Phase_PHASE_PREPARING:
		if a, ok := cvPrepared(s, o); !ok {
			return a
		}
		if len(s.Canary.Steps) == 1 { // 100 at once: CV
			return Action{Step: Switch, Phase: pb.Phase_PHASE_DRAINING}
		}
		return Action{Step: Enter, Phase: pb.Phase_PHASE_CANARY, Reason: fmt.Sprintf("step 1: %d%%", s.Canary.Steps[0])}
	case pb.Phase_PHASE_CANARY:
		co, _ := o.(CanaryObservation)
		if co == nil {
			return wait
		}
		if worse, why := co.Worse(); worse {
			return Action{Step: Abandon, Reason: "analysis: " + why}
		}
		if t := s.Options.Timeout; t > 0 && o.Elapsed() > t {
			return Action{Step: Abandon, Reason: fmt.Sprintf("timeout: the canary of %s did not reach its last step within %v", o.Subject(), t)}
		}
		if s.Canary.Paused || s.Canary.Interval <= 0 || co.StepElapsed() < s.Canary.Interval || o.SwitchesHeld() {
			return wait
		}
		return Promotion(s)
	}
	return wait
}

// Promotion is the action that moves a canary in state s to its next
// step: the next weight, or the switch when the next is the last (100).
func Promotion(s State) Action {
	if s.Canary.NextIsSwitch() {
		return Action{Step: Switch, Phase: pb.Phase_PHASE_DRAINING}
	}
	next := s.Canary.Step + 1
	return Action{Step: Promote, Phase: pb.Phase_PHASE_CANARY,
		Reason: fmt.Sprintf("step %d: %d%%", next+1, s.Canary.Steps[next])}
}

// canaryAbort: in CANARY transactions may have been assigned the new
// version: a rollback (the default never moved); after the switch, CV's.
func canaryAbort(s State) AbortPlan {
	if s.Phase == pb.Phase_PHASE_CANARY {
		return AbortPlan{Rollback: true}
	}
	return abortPlan(s)
}
