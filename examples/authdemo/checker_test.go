package main

import (
	"testing"
)

// The checker counts a transaction once, the moment it runs on a second
// version of a service, and forgets it when it ends.
func TestRecorder(t *testing.T) {
	r := newRecorder()
	r.record("t1", authService, "v1")
	r.record("t1", "proc", "v1")
	r.record("t1", authService, "v1")
	r.record("t2", authService, "v2")
	if n := r.violations(); n != 0 {
		t.Fatalf("violations = %d, want 0", n)
	}
	r.record("t1", authService, "v2")
	r.record("t1", "proc", "v2")
	if n := r.violations(); n != 1 {
		t.Fatalf("violations = %d after t1 ran on v1 and v2, want 1", n)
	}
	r.finish("t1")
	r.finish("t2")
	if len(r.seen) != 0 || len(r.broken) != 0 {
		t.Fatalf("ended transactions kept: %v %v", r.seen, r.broken)
	}
	if n := r.violations(); n != 1 {
		t.Fatalf("violations = %d after the end, want 1", n)
	}
	if s := r.authServed(); s["v1"] != 2 || s["v2"] != 2 {
		t.Fatalf("authServed = %v, want v1:2 v2:2", s)
	}
}

// With --set the checker also counts a transaction that ran Portal and
// Proc on different versions, once.
func TestRecorderMixedSet(t *testing.T) {
	r := newRecorder()
	r.record("same", "portal", "v2")
	r.record("same", "proc", "v2")
	r.record("mixed", "web", "v1")
	r.record("mixed", "portal", "v1")
	r.record("mixed", authService, "v1")
	if n := r.violations(); n != 0 {
		t.Fatalf("violations = %d before any mixed pair, want 0", n)
	}
	r.record("mixed", "proc", "v2")
	r.record("mixed", "db", "v1")
	if n := r.violations(); n != 1 {
		t.Fatalf("violations = %d after portal@v1 and proc@v2, want 1", n)
	}
}

// With --lane the checker also counts a lane transaction served by a lane
// member at another version than its lane's, once.
func TestRecorderLane(t *testing.T) {
	r := newRecorder()
	lane := map[string]string{authService: "v2"}
	r.recordIn("t1", "portal", "v1", lane)
	r.recordIn("t1", authService, "v2", lane)
	r.recordIn("t2", authService, "v1", nil)
	if n := r.violations(); n != 0 || r.laneRequests() != 2 {
		t.Fatalf("violations = %d, lane requests %d; want 0 and 2", n, r.laneRequests())
	}
	r.recordIn("t3", authService, "v1", lane) // off its lane at its first use
	r.recordIn("t3", "proc", "v1", lane)
	if n := r.violations(); n != 1 {
		t.Fatalf("violations = %d after t3 left its lane, want 1", n)
	}
}
