package strategy

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// seen is an Observation with fixed answers.
type seen struct {
	elapsed, heldLongest           time.Duration
	unacked                        int
	free, oldInUse, newInUse, held bool
	notReady, waitingBegin         bool
}

func (seen) Subject() string          { return "auth" }
func (o seen) Elapsed() time.Duration { return o.elapsed }
func (o seen) Unacked() int           { return o.unacked }
func (o seen) UnackedSessions(limit int) []string {
	var out []string
	for i := range min(o.unacked, limit) {
		out = append(out, fmt.Sprintf("s-%d", i+1))
	}
	return out
}
func (o seen) Free() bool                 { return o.free }
func (o seen) SwitchesHeld() bool         { return o.held }
func (o seen) Ready() bool                { return !o.notReady }
func (o seen) WaitingBegin() bool         { return o.waitingBegin }
func (o seen) HeldLongest() time.Duration { return o.heldLongest }
func (o seen) InUse(t Target) bool {
	if t == Old {
		return o.oldInUse
	}
	return o.newInUse
}

const (
	preparing = pb.Phase_PHASE_PREPARING
	waiting   = pb.Phase_PHASE_WAITING
	draining  = pb.Phase_PHASE_DRAINING
	switchedP = pb.Phase_PHASE_SWITCHED
	done      = pb.Phase_PHASE_DONE
	aborted   = pb.Phase_PHASE_ABORTED
)

func TestNext(t *testing.T) {
	bounded := Options{Timeout: time.Second, MaxBlock: 100 * time.Millisecond}
	at := func(p pb.Phase) State { return State{Phase: p, Options: bounded} }
	switchedAt := func(p pb.Phase) State { return State{Phase: p, Switched: true, Options: bounded} }
	rolling := State{Phase: aborted, Switched: true, RollingBack: true, Options: bounded}
	type tc struct {
		name string
		s    State
		o    seen
		want Action // Reason: only its prefix is compared
	}
	enter := func(p pb.Phase) Action { return Action{Step: Enter, Phase: p} }
	sw := func(p pb.Phase) Action { return Action{Step: Switch, Phase: p} }
	fin := func(p pb.Phase) Action { return Action{Step: Finish, Phase: p} }
	abandon := func(why string) Action { return Action{Step: Abandon, Reason: why} }
	waitForFreeCases := []tc{
		{"preparing, a session has not acknowledged", at(preparing), seen{unacked: 1}, wait},
		{"preparing past the timeout", at(preparing), seen{unacked: 1, elapsed: 2 * time.Second}, abandon("timeout: sessions did not all enter update mode within 1s")},
		{"preparing, all acknowledged", at(preparing), seen{}, enter(waiting)},
		{"waiting, not free", at(waiting), seen{}, wait},
		{"waiting, free", at(waiting), seen{free: true}, sw(switchedP)},
		{"waiting, free but switches held", at(waiting), seen{free: true, held: true}, wait},
		{"waiting, free but the new version not connected", at(waiting), seen{free: true, notReady: true}, wait},
		{"waiting past the timeout", at(waiting), seen{elapsed: 2 * time.Second}, abandon("timeout: auth was not free within 1s")},
		{"waiting, free past the timeout: the switch wins", at(waiting), seen{free: true, elapsed: 2 * time.Second}, sw(switchedP)},
		{"waiting, a call held past max-block", at(waiting), seen{heldLongest: time.Second}, abandon("max-block: a call was held longer than 100ms")},
		{"switched", switchedAt(switchedP), seen{}, fin(done)},
		{"switched, a call waits for its BEGIN", switchedAt(switchedP), seen{waitingBegin: true}, wait},
		{"rolling back, new in use", rolling, seen{newInUse: true}, wait},
		{"rolling back, switches held", rolling, seen{held: true}, wait},
		{"rolling back, a call waits for its BEGIN", rolling, seen{waitingBegin: true}, wait},
		{"rolling back, drained", rolling, seen{oldInUse: true}, fin(aborted)},
		{"done", switchedAt(done), seen{free: true}, wait},
	}
	cases := map[Kind][]tc{
		WF: waitForFreeCases,
		BF: waitForFreeCases,
		CV: {
			{"preparing, a session has not acknowledged", at(preparing), seen{unacked: 2}, wait},
			{"preparing past the timeout", at(preparing), seen{unacked: 1, elapsed: 2 * time.Second}, abandon("timeout: sessions did not all enter update mode")},
			{"preparing, all acknowledged: switch at once", at(preparing), seen{}, sw(draining)},
			{"preparing, switches held", at(preparing), seen{held: true}, wait},
			{"preparing, the new version not connected", at(preparing), seen{notReady: true}, wait},
			{"draining, old in use", switchedAt(draining), seen{oldInUse: true}, wait},
			{"draining, drained", switchedAt(draining), seen{newInUse: true}, enter(switchedP)},
			{"draining, drained but switches held", switchedAt(draining), seen{held: true}, wait},
			{"draining, drained but a call waits for its BEGIN", switchedAt(draining), seen{waitingBegin: true}, wait},
			{"draining never times out", switchedAt(draining), seen{oldInUse: true, elapsed: time.Hour}, wait},
			{"switched", switchedAt(switchedP), seen{}, fin(done)},
			{"rolling back, new in use", rolling, seen{newInUse: true}, wait},
			{"rolling back, drained", rolling, seen{}, fin(aborted)},
		},
		NAIVE: {
			{"preparing: switch at once, whatever is seen", at(preparing), seen{unacked: 5, held: true}, sw(switchedP)},
			{"switched: done", switchedAt(switchedP), seen{waitingBegin: true}, fin(done)},
			{"done", switchedAt(done), seen{}, wait},
		},
	}
	for k, list := range cases {
		st, err := For(k)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list {
			got := st.Next(c.s, c.o)
			if got.Step != c.want.Step || got.Phase != c.want.Phase || !strings.HasPrefix(got.Reason, c.want.Reason) ||
				(c.want.Reason == "" && got.Reason != "") {
				t.Errorf("%s, %s: Next = %v, want %v", Name(k), c.name, got, c.want)
			}
		}
	}
}

// Driving each machine from PREPARING with the set free and drained
// reaches DONE through the phases DESIGN §4 names, one step at a time.
func TestMachinesRunToDone(t *testing.T) {
	for k, want := range map[Kind][]pb.Phase{
		WF:    {waiting, switchedP, done},
		BF:    {waiting, switchedP, done},
		CV:    {draining, switchedP, done},
		NAIVE: {switchedP, done},
	} {
		st, _ := For(k)
		s := State{Phase: preparing}
		var got []pb.Phase
		for range 10 {
			a := st.Next(s, seen{free: true})
			if a.Step == Wait {
				break
			}
			s.Phase = a.Phase
			s.Switched = s.Switched || a.Step == Switch
			got = append(got, a.Phase)
		}
		if len(got) != len(want) {
			t.Errorf("%s: phases %v, want %v", Name(k), got, want)
			continue
		}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s: phases %v, want %v", Name(k), got, want)
				break
			}
		}
	}
}

func TestAbortResumeOptions(t *testing.T) {
	for _, k := range []Kind{WF, BF, CV} {
		st, _ := For(k)
		if p := st.Abort(State{Phase: preparing}); p != (AbortPlan{}) {
			t.Errorf("%s: abort before the switch = %+v, want nothing to undo", Name(k), p)
		}
		if p := st.Abort(State{Phase: draining, Switched: true}); p != (AbortPlan{RouteBack: true, Rollback: true}) {
			t.Errorf("%s: abort after the switch = %+v, want a rollback", Name(k), p)
		}
		if !st.UpdateMode() || !st.Pins() {
			t.Errorf("%s: want update mode and pins", Name(k))
		}
	}
	naive, _ := For(NAIVE)
	if p := naive.Abort(State{Phase: switchedP, Switched: true}); p != (AbortPlan{RouteBack: true}) {
		t.Errorf("naive: abort after the switch = %+v, want the route back and no rollback", p)
	}
	if naive.UpdateMode() || naive.Pins() {
		t.Error("naive: want no update mode and no pins")
	}
	bf, _ := For(BF)
	if o := bf.Options(Options{}); o.MaxBlock != DefaultMaxBlock {
		t.Errorf("bf: default max-block %v, want %v", o.MaxBlock, DefaultMaxBlock)
	}
	if o := bf.Options(Options{MaxBlock: time.Second}); o.MaxBlock != time.Second {
		t.Errorf("bf: max-block given %v, kept %v", time.Second, o.MaxBlock)
	}
	for _, tc := range []struct {
		phase   pb.Phase
		rolling bool
		want    State
	}{
		{preparing, false, State{Phase: preparing}},
		{waiting, false, State{Phase: waiting}},
		{draining, false, State{Phase: draining, Switched: true}},
		{switchedP, false, State{Phase: switchedP, Switched: true}},
		{aborted, true, State{Phase: aborted, Switched: true, RollingBack: true}},
		{aborted, false, State{Phase: aborted}},
	} {
		if got := Resume(tc.phase, tc.rolling, Options{}); got != tc.want {
			t.Errorf("Resume(%v, %v) = %+v, want %+v", tc.phase, tc.rolling, got, tc.want)
		}
		if got := Resume(tc.phase, tc.rolling, Options{}); got.Finished() != (tc.phase == aborted && !tc.rolling) {
			t.Errorf("Resume(%v, %v).Finished() = %v", tc.phase, tc.rolling, got.Finished())
		}
	}
}

// Every strategy the protocol names is registered, and nothing else.
func TestEveryStrategyRegistered(t *testing.T) {
	for v, name := range pb.Strategy_name {
		k := Kind(v)
		st, err := For(k)
		if k == pb.Strategy_STRATEGY_UNSPECIFIED {
			if !errors.Is(err, ErrNoStrategy) {
				t.Errorf("For(%s) = %v, %v; want ErrNoStrategy", name, st, err)
			}
			continue
		}
		if err != nil || st.Kind() != k {
			t.Errorf("For(%s) = %v, %v", name, st, err)
		}
	}
}

// PREPARING is bounded by PrepareTimeout: past it the update aborts with a
// reason naming (at most MaxNamed of) the sessions that did not
// acknowledge, or, for CV, saying no instance of the new version came.
// It bounds PREPARING only.
func TestPrepareTimeout(t *testing.T) {
	o := Options{PrepareTimeout: 2 * time.Minute}
	at := func(p pb.Phase) State { return State{Phase: p, Options: o} }
	late, early := 3*time.Minute, time.Minute
	names := "s-1, s-2, s-3, s-4, s-5, s-6, s-7, s-8, s-9, s-10"
	abandon := func(why string) Action { return Action{Step: Abandon, Reason: why} }
	type tc struct {
		name string
		s    State
		o    seen
		want Action // Reason compared whole
	}
	common := []tc{
		{"one unacknowledged, before the bound", at(preparing), seen{unacked: 1, elapsed: early}, wait},
		{"one unacknowledged, past the bound", at(preparing), seen{unacked: 1, elapsed: late},
			abandon("prepare-timeout: 1 sessions did not acknowledge update mode within 2m0s: s-1")},
		{"twelve unacknowledged, past the bound: ten named", at(preparing), seen{unacked: 12, elapsed: late},
			abandon("prepare-timeout: 12 sessions did not acknowledge update mode within 2m0s: " + names + " and 2 more")},
		{"past the bound, switches held, unacknowledged", at(preparing), seen{unacked: 1, held: true, elapsed: late},
			abandon("prepare-timeout: 1 sessions did not acknowledge update mode within 2m0s: s-1")},
	}
	cases := map[Kind][]tc{
		WF: append(common[:len(common):len(common)],
			tc{"waiting past the prepare bound is not bounded by it", at(waiting), seen{elapsed: late}, wait}),
		BF: common,
		CV: append(common[:len(common):len(common)],
			tc{"acknowledged, new version not connected, before the bound", at(preparing), seen{notReady: true, elapsed: early}, wait},
			tc{"acknowledged, new version not connected, past the bound", at(preparing), seen{notReady: true, elapsed: late},
				abandon("prepare-timeout: no instance of the new version of auth connected within 2m0s")},
			tc{"acknowledged, switches held past the bound: their own bounds apply", at(preparing), seen{held: true, elapsed: late}, wait},
			tc{"draining past the prepare bound is not bounded by it", State{Phase: draining, Switched: true, Options: o}, seen{oldInUse: true, elapsed: late}, wait},
		),
		NAIVE: {{"no update mode: nothing to acknowledge", at(preparing), seen{unacked: 3, elapsed: late}, Action{Step: Switch, Phase: switchedP}}},
	}
	for k, list := range cases {
		st, _ := For(k)
		for _, c := range list {
			if got := st.Next(c.s, c.o); got != c.want {
				t.Errorf("%s, %s: Next = %+v, want %+v", Name(k), c.name, got, c.want)
			}
		}
	}
}
