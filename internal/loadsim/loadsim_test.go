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
