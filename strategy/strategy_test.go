package strategy

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]Kind{"wf": WF, "BF": BF, "Cv": CV, "naive": NAIVE} {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := Parse("blue-green"); !errors.Is(err, ErrUnknown) {
		t.Errorf("Parse(blue-green) error = %v, want ErrUnknown", err)
	}
	if Name(CV) != "cv" {
		t.Errorf("Name(CV) = %q", Name(CV))
	}
}

func TestDecide(t *testing.T) {
	const old, nu = 1, 2
	fresh, usedOld, usedNew := Call{}, Call{Used: old, HasUsed: true}, Call{Used: nu, HasUsed: true}
	for _, tc := range []struct {
		name               string
		k                  Kind
		switched, rollback bool
		c                  Call
		want               Decision
	}{
		{"WF before switch, fresh", WF, false, false, fresh, Decision{Version: old}},
		{"WF before switch, used old", WF, false, false, usedOld, Decision{Version: old}},
		{"WF after switch, fresh", WF, true, false, fresh, Decision{Version: nu}},
		{"WF after switch, used old (broke its hint)", WF, true, false, usedOld, Decision{Version: old}},
		{"BF before switch, past on S", BF, false, false, usedOld, Decision{Version: old}},
		{"BF before switch, no past: held", BF, false, false, fresh, Decision{Hold: true}},
		{"BF after switch, fresh", BF, true, false, fresh, Decision{Version: nu}},
		{"CV switched, fresh", CV, true, false, fresh, Decision{Version: nu}},
		{"CV switched, pinned old", CV, true, false, usedOld, Decision{Version: old}},
		{"CV switched, pinned new", CV, true, false, usedNew, Decision{Version: nu}},
		{"CV rolled back, fresh", CV, true, true, fresh, Decision{Version: old}},
		{"CV rolled back, pinned new", CV, true, true, usedNew, Decision{Version: nu}},
		{"NAIVE switched ignores what was used", NAIVE, true, false, usedOld, Decision{Version: nu}},
	} {
		if got := Decide(tc.k, tc.switched, tc.rollback, old, nu, tc.c); got != tc.want {
			t.Errorf("%s: Decide = %+v, want %+v", tc.name, got, tc.want)
		}
	}
	if !SwitchesAtOnce(CV) || !SwitchesAtOnce(NAIVE) || SwitchesAtOnce(WF) || SwitchesAtOnce(BF) {
		t.Error("SwitchesAtOnce: want CV and NAIVE only")
	}
	if Pins(NAIVE) || !Pins(CV) {
		t.Error("Pins: want every strategy but NAIVE")
	}
}
