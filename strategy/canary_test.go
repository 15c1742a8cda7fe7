package strategy

import (
	"errors"
	"strings"
	"testing"
	"time"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

const canaryP = pb.Phase_PHASE_CANARY

func TestCheckSteps(t *testing.T) {
	for _, ok := range [][]uint32{{100}, {5, 25, 50, 100}, {1, 2, 100}} {
		if err := CheckSteps(ok); err != nil {
			t.Errorf("CheckSteps(%v) = %v", ok, err)
		}
	}
	for _, bad := range [][]uint32{nil, {0, 100}, {50, 25, 100}, {5, 5, 100}, {5, 50}, {5, 101}, make([]uint32, 21)} {
		if err := CheckSteps(bad); !errors.Is(err, ErrBadCanary) {
			t.Errorf("CheckSteps(%v) = %v, want ErrBadCanary", bad, err)
		}
	}
}

// The weights are exact: after any n transactions of a step, exactly
// floor(n*w/100) went to the new version.
func TestAssignNewIsExact(t *testing.T) {
	for _, w := range []uint32{1, 5, 25, 33, 50, 99, 100} {
		var nw uint64
		for n := uint64(0); n < 1000; n++ {
			if AssignNew(n, w) {
				nw++
			}
			if want := (n + 1) * uint64(w) / 100; nw != want {
				t.Fatalf("w=%d: after %d transactions %d new, want %d", w, n+1, nw, want)
			}
		}
	}
}

func canaryState(step int, paused bool) State {
	return State{Phase: canaryP, Canary: &Canary{Steps: []uint32{5, 25, 50, 100}, Step: step, Paused: paused, Interval: time.Minute}}
}

// A transaction that used the set stays on it whatever the weight; a
// fresh one gets the weight; rolling back, fresh ones get the old version.
func TestCanaryDecide(t *testing.T) {
	cv := registry[CV]
	s := canaryState(1, false) // 25%
	newN := 0
	for n := range uint64(100) {
		if d := cv.Decide(s, Call{Used: true, Assigned: n}); d.Target != Same {
			t.Fatalf("used transaction: %v, want same (pin stickiness)", d.Target)
		}
		if cv.Decide(s, Call{Assigned: n}).Target == New {
			newN++
		}
	}
	if newN != 25 {
		t.Fatalf("25%% step: %d of 100 fresh transactions to new", newN)
	}
	pre := State{Phase: preparing, Canary: s.Canary}
	if d := cv.Decide(pre, Call{Assigned: 99}); d.Target != Old {
		t.Errorf("PREPARING: %v, want old", d.Target)
	}
	rolling := canaryState(1, false)
	rolling.Phase, rolling.RollingBack = aborted, true
	for n := range uint64(10) {
		if d := cv.Decide(rolling, Call{Assigned: n}); d.Target != Old {
			t.Fatalf("rolling back, fresh: %v, want old", d.Target)
		}
	}
	if d := cv.Decide(rolling, Call{Used: true}); d.Target != Same {
		t.Errorf("rolling back, used: %v, want same", d.Target)
	}
	sw := State{Phase: draining, Switched: true, Canary: s.Canary}
	if d := cv.Decide(sw, Call{}); d.Target != New {
		t.Errorf("switched: %v, want new", d.Target)
	}
}

// canarySeen is an Observation of a canary.
type canarySeen struct {
	seen
	stepElapsed time.Duration
	worse       string
}

func (o canarySeen) StepElapsed() time.Duration { return o.stepElapsed }
func (o canarySeen) Worse() (bool, string)      { return o.worse != "", o.worse }

func TestCanaryNext(t *testing.T) {
	cv := registry[CV]
	pre := State{Phase: preparing, Canary: canaryState(0, false).Canary}
	if a := cv.Next(pre, canarySeen{}); a.Step != Enter || a.Phase != canaryP {
		t.Errorf("prepared: %v, want enter CANARY", a)
	}
	if a := cv.Next(pre, canarySeen{seen: seen{unacked: 1}}); a.Step != Wait {
		t.Errorf("unacknowledged: %v, want wait", a)
	}
	if a := cv.Next(State{Phase: preparing, Canary: &Canary{Steps: []uint32{100}}}, canarySeen{}); a.Step != Switch || a.Phase != draining {
		t.Errorf("--canary 100: %v, want switch to DRAINING", a)
	}
	for _, tc := range []struct {
		name string
		s    State
		o    canarySeen
		want Action
	}{
		{"step not over", canaryState(0, false), canarySeen{stepElapsed: 30 * time.Second}, wait},
		{"step over", canaryState(0, false), canarySeen{stepElapsed: time.Minute}, Action{Step: Promote, Phase: canaryP, Reason: "step 2: 25%"}},
		{"paused", canaryState(0, true), canarySeen{stepElapsed: time.Hour}, wait},
		{"switches held", canaryState(0, false), canarySeen{seen: seen{held: true}, stepElapsed: time.Hour}, wait},
		{"before the last", canaryState(2, false), canarySeen{stepElapsed: time.Minute}, Action{Step: Switch, Phase: draining}},
		{"worse", canaryState(0, true), canarySeen{worse: "error rate"}, Action{Step: Abandon, Reason: "analysis: error rate"}},
		{"timeout", State{Phase: canaryP, Canary: canaryState(0, true).Canary, Options: Options{Timeout: time.Minute}},
			canarySeen{seen: seen{elapsed: 2 * time.Minute}}, Action{Step: Abandon, Reason: "timeout: the canary of auth did not reach its last step within 1m0s"}},
	} {
		if got := cv.Next(tc.s, tc.o); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	manual := canaryState(0, false)
	manual.Canary.Interval = 0
	if a := cv.Next(manual, canarySeen{stepElapsed: time.Hour}); a.Step != Wait {
		t.Errorf("manual: %v, want wait", a)
	}
	if a := Promotion(manual); a.Step != Promote || !strings.Contains(a.Reason, "25%") {
		t.Errorf("promote by hand: %v", a)
	}
}

func TestCanaryAbort(t *testing.T) {
	cv := registry[CV]
	if p := cv.Abort(canaryState(1, false)); p.RouteBack || !p.Rollback {
		t.Errorf("abort in CANARY: %+v, want a rollback with the default unchanged", p)
	}
	if p := cv.Abort(State{Phase: preparing, Canary: canaryState(0, false).Canary}); p.RouteBack || p.Rollback {
		t.Errorf("abort in PREPARING: %+v, want neither", p)
	}
	if p := cv.Abort(State{Phase: draining, Switched: true, Canary: canaryState(3, false).Canary}); !p.RouteBack || !p.Rollback {
		t.Errorf("abort after the switch: %+v, want CV's rollback", p)
	}
	rolling := canaryState(1, false)
	rolling.Phase, rolling.RollingBack = aborted, true
	if a := cv.Next(rolling, canarySeen{seen: seen{newInUse: true}}); a.Step != Wait {
		t.Errorf("rollback with the new version in use: %v", a)
	}
	if a := cv.Next(rolling, canarySeen{}); a.Step != Finish || a.Phase != aborted {
		t.Errorf("rollback drained: %v", a)
	}
}

func TestWindowAndJudge(t *testing.T) {
	now := time.Unix(1000, 0)
	old, nw := NewWindow(10*time.Second), NewWindow(10*time.Second)
	for i := range 1000 {
		at := now.Add(-time.Duration(i) * 5 * time.Millisecond) // the last 5 s
		old.Add(at, i%100 == 0, time.Millisecond)               // 1% errors
		nw.Add(at, i%5 == 0, 2*time.Millisecond)                // 20% errors
	}
	os, ns := old.Stats(now), nw.Stats(now)
	if os.Calls != 1000 || os.Errors != 10 || ns.Errors != 200 {
		t.Fatalf("stats %+v %+v", os, ns)
	}
	if os.P99 < time.Millisecond || os.P99 > 1200*time.Microsecond {
		t.Errorf("old p99 %v, want within a bucket above 1ms", os.P99)
	}
	l := Limits{MaxErrorRate: 0.05, Window: 10 * time.Second}
	if worse, why := Judge(l, os, ns); !worse || !strings.Contains(why, "error rate") {
		t.Errorf("20%% against 1%%: %v %q", worse, why)
	}
	if worse, _ := Judge(l, os, os); worse {
		t.Error("the same stats judged worse")
	}
	if worse, _ := Judge(Limits{MaxP99: 500 * time.Microsecond}, os, ns); !worse {
		t.Error("p99 2ms against 1ms with --max-p99 0.5ms: not worse")
	}
	if worse, _ := Judge(Limits{MaxP99: 2 * time.Millisecond}, os, ns); worse {
		t.Error("p99 2ms against 1ms with --max-p99 2ms: worse")
	}
	if worse, _ := Judge(l, os, Stats{Calls: MinAnalysisCalls - 1, Errors: MinAnalysisCalls - 1}); worse {
		t.Error("a verdict on fewer than MinAnalysisCalls calls")
	}
	// Past the window the calls are forgotten.
	if s := old.Stats(now.Add(11 * time.Second)); s.Calls != 0 {
		t.Errorf("11s later: %d calls in a 10s window", s.Calls)
	}
}
