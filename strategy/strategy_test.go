package strategy

import (
	"errors"
	"testing"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]Kind{"wf": WF, "BF": BF, "Cv": CV, "naive": NAIVE, "STRATEGY_CV": CV, "strategy_bf": BF} {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"blue-green", "STRATEGY_UNSPECIFIED", "unspecified", ""} {
		if _, err := Parse(in); !errors.Is(err, ErrUnknown) {
			t.Errorf("Parse(%q) error = %v, want ErrUnknown", in, err)
		}
	}
	if Name(CV) != "cv" {
		t.Errorf("Name(CV) = %q", Name(CV))
	}
}

func TestDecide(t *testing.T) {
	fresh, used := Call{}, Call{Used: true}
	before, switched, rolling := State{Phase: pb.Phase_PHASE_WAITING}, State{Phase: pb.Phase_PHASE_DRAINING, Switched: true},
		State{Phase: pb.Phase_PHASE_ABORTED, Switched: true, RollingBack: true}
	for _, tc := range []struct {
		name string
		k    Kind
		s    State
		c    Call
		want Decision
	}{
		{"WF before switch, fresh", WF, before, fresh, Decision{Target: Old}},
		{"WF before switch, used", WF, before, used, Decision{Target: Same}},
		{"WF after switch, fresh", WF, switched, fresh, Decision{Target: New}},
		{"WF after switch, used old (broke its hint)", WF, switched, used, Decision{Target: Same}},
		{"BF before switch, past on S", BF, before, used, Decision{Target: Same}},
		{"BF before switch, no past: held", BF, before, fresh, Decision{Hold: true}},
		{"BF after switch, fresh", BF, switched, fresh, Decision{Target: New}},
		{"BF rolled back, fresh: old, not held", BF, rolling, fresh, Decision{Target: Old}},
		{"CV before switch, fresh", CV, State{Phase: pb.Phase_PHASE_PREPARING}, fresh, Decision{Target: Old}},
		{"CV switched, fresh", CV, switched, fresh, Decision{Target: New}},
		{"CV switched, pinned", CV, switched, used, Decision{Target: Same}},
		{"CV rolled back, fresh", CV, rolling, fresh, Decision{Target: Old}},
		{"CV rolled back, pinned", CV, rolling, used, Decision{Target: Same}},
		{"NAIVE before switch ignores what was used", NAIVE, before, used, Decision{Target: Old}},
		{"NAIVE switched ignores what was used", NAIVE, switched, used, Decision{Target: New}},
	} {
		st, err := For(tc.k)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Decide(tc.s, tc.c); got != tc.want {
			t.Errorf("%s: Decide = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
