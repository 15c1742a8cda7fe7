package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--leader-ttl", "1s"}, "--leader-ttl 1s: want whole seconds, at least 2s"},
		{[]string{"--leader-ttl", "2500ms"}, "--leader-ttl 2.5s: want whole seconds, at least 2s"},
		{[]string{"--leader-ttl", "10s", "--min-session-ttl", "6s"}, "--min-session-ttl 6s is shorter than --leader-ttl 10s"},
		{[]string{"--gc-percent", "0"}, "--gc-percent 0: want a positive percentage, or -1"},
		{[]string{"--gc-percent", "-2"}, "--gc-percent -2: want a positive percentage, or -1"},
		{[]string{"--begin-wait-timeout", "0s"}, "--begin-wait-timeout must be positive"},
		{[]string{"--gc-headroom-mb", "-1"}, "--gc-headroom-mb -1: want 0 (off) or a positive number of MiB"},
		{[]string{"--max-sessions", "0"}, "--max-sessions 0: want a positive number"},
		{[]string{"--max-sessions-per-peer", "-1"}, "--max-sessions-per-peer -1: want a positive number"},
		{[]string{"--max-rejected-events-per-second", "0"}, "--max-rejected-events-per-second 0: want a positive rate"},
		{[]string{"--rejected-event-burst", "0"}, "--rejected-event-burst 0: want a positive number"},
	} {
		var stderr bytes.Buffer
		if code := run(tc.args, io.Discard, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", tc.args, code, stderr.String())
		}
		if got := stderr.String(); !strings.HasPrefix(got, "coordinatord: ") || !strings.Contains(got, tc.want) {
			t.Errorf("%q: stderr %q, want %q", tc.args, got, tc.want)
		}
	}
}

// GOGC=0 is the runtime's to read: only a --gc-percent given on the
// command line is checked.
func TestGCPercentFromTheEnvironmentIsNotAFlagError(t *testing.T) {
	t.Setenv("GOGC", "0")
	var stderr bytes.Buffer
	// A bad --leader-ttl, checked after --gc-percent, stops it before it
	// starts anything.
	if code := run([]string{"--leader-ttl", "1s"}, io.Discard, &stderr); code != 2 || strings.Contains(stderr.String(), "--gc-percent") {
		t.Fatalf("exit %d, stderr %q: want only the --leader-ttl error", code, stderr.String())
	}
}

func TestSetGCPercent(t *testing.T) {
	orig := setGCPercent(250)
	defer setGCPercent(orig)
	if got := setGCPercent(orig); got != 250 {
		t.Fatalf("GC target after setGCPercent(250): %d", got)
	}
	if err := validateGCPercent(-1); err != nil {
		t.Fatalf("-1 (off) refused: %v", err)
	}
}

// flagErrorCase is a command line coordinatord must refuse before it
// starts anything (exit 2), with want in its one line on stderr.
type flagErrorCase struct {
	args []string
	want string
}

// checkFlagErrors runs each case and checks the refusal.
func checkFlagErrors(t *testing.T, cases []flagErrorCase) {
	t.Helper()
	for _, tc := range cases {
		var stderr bytes.Buffer
		if code := run(tc.args, io.Discard, &stderr); code != 2 || !strings.HasPrefix(stderr.String(), "coordinatord: ") || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q, want 2 and %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}
