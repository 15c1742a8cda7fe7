package loadsim

import (
	"strings"
	"testing"
	"time"
)

// The oracle counts a transaction seen on two versions of a service and
// explains the first one with what the transaction ran, in order.
func TestOracleReportsTheFirstViolationWithItsTrace(t *testing.T) {
	s := &Sim{oracle: NewOracle(), trace: map[string][]step{}, began: time.Now()}
	s.record("T", step{to: "a", ver: "v1"})
	s.record("T", step{from: "a", fromVer: "v1", fromSub: 1, to: "d", ver: "v1", sub: 2, took: time.Millisecond})
	s.record("U", step{to: "a", ver: "v1"})
	s.record("U", step{from: "a", fromVer: "v1", fromSub: 5, to: "d", ver: "v2", sub: 6})
	if s.Violations() != 0 || s.FirstViolation() != "" {
		t.Fatalf("violations before any: %d %q", s.Violations(), s.FirstViolation())
	}
	s.record("T", step{from: "a", fromVer: "v1", fromSub: 1, to: "d", ver: "v2", sub: 3, took: 2 * time.Microsecond})
	s.record("U", step{from: "a", fromVer: "v1", fromSub: 5, to: "d", ver: "v1", sub: 7})
	if s.Violations() != 2 {
		t.Fatalf("violations: %d, want 2", s.Violations())
	}
	got := s.FirstViolation()
	for _, want := range []string{"transaction T ran on d@v1 and d@v2:", "begin at a@v1", "a@v1 (sub 1) -> d@v1 (sub 2) in 1ms", "a@v1 (sub 1) -> d@v2 (sub 3) in 2µs"} {
		if !strings.Contains(got, want) {
			t.Errorf("first violation %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "transaction U") {
		t.Errorf("first violation names the second: %q", got)
	}
}

// A watched set: a transaction that ran the old version of one member and
// the new version of another ran a mixed set, counted once, and explained;
// one entirely on either side did not; versions of neither side and
// services outside the set are not the set's business.
func TestOracleCountsMixedSets(t *testing.T) {
	s := &Sim{oracle: NewOracle(), trace: map[string][]step{}, began: time.Now()}
	s.WatchSet(Set{"portal": {"v1", "v2"}, "proc": {"v1", "v2"}})
	s.record("old", step{to: "portal", ver: "v1"})
	s.record("old", step{from: "portal", fromVer: "v1", to: "proc", ver: "v1"})
	s.record("new", step{to: "portal", ver: "v2"})
	s.record("new", step{from: "portal", fromVer: "v2", to: "proc", ver: "v2"})
	s.record("other", step{to: "portal", ver: "v1"})
	s.record("other", step{from: "portal", fromVer: "v1", to: "auth", ver: "v2"})
	s.record("other", step{from: "portal", fromVer: "v1", to: "proc", ver: "v0"})
	if s.MixedSets() != 0 || s.FirstViolation() != "" {
		t.Fatalf("mixed sets before any: %d %q", s.MixedSets(), s.FirstViolation())
	}
	s.record("M", step{to: "portal", ver: "v1"})
	s.record("M", step{from: "portal", fromVer: "v1", to: "proc", ver: "v2"})
	s.record("M", step{from: "portal", fromVer: "v1", to: "proc", ver: "v2"})
	if s.MixedSets() != 1 || s.Violations() != 0 {
		t.Fatalf("mixed sets %d, violations %d; want 1 and 0", s.MixedSets(), s.Violations())
	}
	if got := s.FirstViolation(); !strings.Contains(got, "transaction M ran a mixed set: portal@v1 and proc@v2:") {
		t.Errorf("first violation %q", got)
	}
	s.forget("M")
	s.record("M", step{to: "proc", ver: "v2"})
	if s.MixedSets() != 1 {
		t.Fatalf("a forgotten transaction's side was kept: %d mixed", s.MixedSets())
	}
}

// A lane transaction that runs a member of its lane on another version
// than its entry map's left its lane: counted once, explained; a member
// on the map's version, and services outside the lane on any one
// version, are fine. For it the set rule applies to set members outside
// its lane only.
func TestOracleCountsLeftLane(t *testing.T) {
	s := &Sim{oracle: NewOracle(), trace: map[string][]step{}, began: time.Now()}
	s.WatchSet(Set{"proc": {"v1", "v2"}, "db": {"v1", "v2"}})
	s.oracle.EnterLane("L", map[string]string{"proc": "v3", "auth": "v2"})
	s.record("L", step{to: "portal", ver: "v1"})
	s.record("L", step{from: "portal", fromVer: "v1", to: "proc", ver: "v3"})
	s.record("L", step{from: "proc", fromVer: "v3", to: "db", ver: "v2"}) // db: outside the lane, one version
	s.record("L", step{from: "portal", fromVer: "v1", to: "auth", ver: "v2"})
	if s.LeftLane() != 0 || s.MixedSets() != 0 || s.Violations() != 0 {
		t.Fatalf("in its lane: left %d mixed %d violations %d (%s)", s.LeftLane(), s.MixedSets(), s.Violations(), s.FirstViolation())
	}
	s.record("L", step{from: "portal", fromVer: "v1", to: "auth", ver: "v1"})
	s.record("L", step{from: "proc", fromVer: "v3", to: "proc", ver: "v1"})
	if s.LeftLane() != 1 {
		t.Fatalf("left lane %d, want 1 (once per transaction)", s.LeftLane())
	}
	if s.Violations() != 2 {
		t.Errorf("violations %d, want 2 (auth and proc each moved)", s.Violations())
	}
	// Leaving the lane at a first use is no two-versions violation: only
	// the lane check sees it.
	s2 := &Sim{oracle: NewOracle(), trace: map[string][]step{}, began: time.Now()}
	s2.oracle.EnterLane("M", map[string]string{"auth": "v2"})
	s2.record("M", step{to: "portal", ver: "v1"})
	s2.record("M", step{from: "portal", fromVer: "v1", to: "auth", ver: "v1"})
	if s2.LeftLane() != 1 || s2.Violations() != 0 {
		t.Errorf("left %d violations %d, want 1 and 0", s2.LeftLane(), s2.Violations())
	}
	if got := s2.FirstViolation(); !strings.Contains(got, "left its lane: ran auth@v1, its lane has v2") {
		t.Errorf("first violation %q", got)
	}
	// Outside a lane the same versions mix the set.
	s.record("N", step{to: "proc", ver: "v1"})
	s.record("N", step{from: "proc", fromVer: "v1", to: "db", ver: "v2"})
	if s.MixedSets() != 1 {
		t.Errorf("mixed sets %d, want 1", s.MixedSets())
	}
	s.forget("L")
	if _, left := s.oracle.RanLane("L", "auth", "v9"); left {
		t.Error("a forgotten transaction is still checked")
	}
}
