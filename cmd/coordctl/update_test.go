package main

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func upd(phase coordinatorv1.Phase, reason string, progress *coordinatorv1.UpdateProgress) *coordinatorv1.Update {
	u := &coordinatorv1.Update{
		Id: "u1", Service: "auth", FromVersion: "v1", ToVersion: "v2",
		Strategy: coordinatorv1.Strategy_STRATEGY_CV, Phase: phase, Reason: reason,
		CreatedAt: timestamppb.New(t0), Progress: progress,
		History: []*coordinatorv1.PhaseChange{{Phase: coordinatorv1.Phase_PHASE_PREPARING, At: timestamppb.New(t0)}},
	}
	if finishedPhase(phase) {
		u.FinishedAt = timestamppb.New(t0.Add(1500 * time.Millisecond))
		u.History = append(u.History, &coordinatorv1.PhaseChange{Phase: phase, At: u.FinishedAt, Reason: reason})
	}
	return u
}

// recvAll replays states, then io.EOF.
func recvAll(us ...*coordinatorv1.Update) func() (*coordinatorv1.Update, error) {
	return func() (*coordinatorv1.Update, error) {
		if len(us) == 0 {
			return nil, io.EOF
		}
		u := us[0]
		us = us[1:]
		return u, nil
	}
}

func now() time.Time { return t0.Add(time.Second) }

func TestWatchPlainLines(t *testing.T) {
	var out bytes.Buffer
	err := watchUpdate(&out, recvAll(
		upd(coordinatorv1.Phase_PHASE_PREPARING, "", &coordinatorv1.UpdateProgress{UnacknowledgedSessions: 2}),
		upd(coordinatorv1.Phase_PHASE_DRAINING, "", &coordinatorv1.UpdateProgress{OldTransactions: 3, DecidedCalls: 10, PinnedCalls: 4}),
		upd(coordinatorv1.Phase_PHASE_DONE, "", nil),
	), false, false, now)
	if err != nil {
		t.Fatalf("watch of a DONE update: %v, want nil (exit 0)", err)
	}
	want := "phase=PREPARING elapsed=1s blocking=0 held=0 old_txns=0 unacked=2 decided=0 pinned=0\n" +
		"phase=DRAINING elapsed=1s blocking=0 held=0 old_txns=3 unacked=0 decided=10 pinned=4\n" +
		"phase=DONE elapsed=1.5s blocking=0 held=0 old_txns=0 unacked=0 decided=0 pinned=0\n" +
		"update u1 of auth to v2: DONE after 1.5s\n"
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
	if strings.Contains(out.String(), "\r") || strings.Contains(out.String(), "\033") {
		t.Fatal("control characters in output that is not a terminal")
	}
}

func TestWatchTerminalRedrawsOneLine(t *testing.T) {
	var out bytes.Buffer
	err := watchUpdate(&out, recvAll(
		upd(coordinatorv1.Phase_PHASE_WAITING, "", &coordinatorv1.UpdateProgress{Blocking: 1}),
		upd(coordinatorv1.Phase_PHASE_ABORTED, "timeout: auth was not free within 1s", nil),
	), true, false, now)
	if !errors.Is(err, errUpdateFailed) {
		t.Fatalf("watch of an ABORTED update: %v, want errUpdateFailed (exit 1)", err)
	}
	s := out.String()
	if strings.Count(s, "\r\033[K") != 2 || strings.Count(s, "\n") != 2 ||
		!strings.HasSuffix(s, "update u1 of auth to v2: ABORTED after 1.5s: timeout: auth was not free within 1s\n") {
		t.Fatalf("terminal output %q", s)
	}
}

func TestWatchJSONAndEndings(t *testing.T) {
	var out bytes.Buffer
	err := watchUpdate(&out, recvAll(upd(coordinatorv1.Phase_PHASE_SWITCHED, "", nil), upd(coordinatorv1.Phase_PHASE_FAILED, "restarted", nil)), false, true, now)
	if !errors.Is(err, errUpdateFailed) {
		t.Fatalf("json watch of a FAILED update: %v", err)
	}
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], `{"id":"u1"`) {
		t.Fatalf("json lines %q", lines)
	}
	if err := watchUpdate(io.Discard, recvAll(), false, false, now); err == nil {
		t.Fatal("an empty watch succeeded")
	}
	if err := watchUpdate(io.Discard, recvAll(upd(coordinatorv1.Phase_PHASE_WAITING, "", nil)), false, false, now); err == nil ||
		!strings.Contains(err.Error(), "WAITING") {
		t.Fatalf("a watch that ends mid-update: %v, want an error naming the phase", err)
	}
}

func TestRenderUpdateAndList(t *testing.T) {
	var out bytes.Buffer
	if err := renderUpdate(&out, upd(coordinatorv1.Phase_PHASE_ABORTED, "operator", nil), now()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Update:    u1", "auth v1 -> v2", "Strategy:  cv", "Phase:     ABORTED", "Reason:    operator", "PREPARING", "2026-11-22T12:00:01Z"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("renderUpdate: missing %q in\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := renderUpdates(&out, &coordinatorv1.ListUpdatesResponse{Updates: []*coordinatorv1.Update{upd(coordinatorv1.Phase_PHASE_DONE, "", nil)}}, now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "u1") || !strings.Contains(out.String(), "DONE") || !strings.Contains(out.String(), "1.5s") {
		t.Fatalf("renderUpdates:\n%s", out.String())
	}
	out.Reset()
	_ = renderUpdates(&out, &coordinatorv1.ListUpdatesResponse{}, now())
	if out.String() != "No updates.\n" {
		t.Fatalf("empty list: %q", out.String())
	}
}

func TestUpdateFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"update", "auth", "--to", "v2", "--strategy=cv", "--dry-run", "-w"}, "--dry-run and --watch cannot be used together"},
		{[]string{"update", "auth", "--to", "v2", "--strategy=cv", "--watch-timeout=1s"}, "--watch-timeout needs --watch"},
		{[]string{"update", "auth", "--to", "v2", "--strategy=cv", "-w", "--watch-timeout=-1s"}, "must not be negative"},
		{[]string{"rollback", "auth", "--strategy=blue"}, `unknown strategy "blue"`},
		{[]string{"rollback"}, "SERVICE"},
		{[]string{"history"}, "SERVICE"},
		{[]string{"service"}, "NAME"},
		{[]string{"services", "x"}, `unexpected argument "x"`},
		{[]string{"freeness", "auth", "--wait-timeout=5s"}, "--wait-timeout needs --wait"},
		{[]string{"status", "ID", "--watch-timeout=5s"}, "--watch-timeout needs --watch"},
		{[]string{"update", "auth", "--to", "v2"}, "--strategy"},
		{[]string{"update", "auth", "--to", "v2", "--strategy=blue"}, `unknown strategy "blue"`},
		{[]string{"update", "auth", "--to", "v2", "--strategy=wf", "--timeout=-1s"}, "must not be negative"},
		{[]string{"update", "--to", "v2", "--strategy=wf"}, "SERVICE"},
		{[]string{"status", "--watch"}, "--watch needs an update ID"},
		{[]string{"abort"}, "ID"},
	} {
		expectUsageError(t, tc.args, tc.msg)
	}
}

// While PREPARING the line names the sessions that have not acknowledged
// (the first ten, and how many more) and what the update waits for.
func TestWatchLineNamesUnacknowledgedSessions(t *testing.T) {
	var out bytes.Buffer
	err := watchUpdate(&out, recvAll(
		upd(coordinatorv1.Phase_PHASE_PREPARING, "", &coordinatorv1.UpdateProgress{UnacknowledgedSessions: 12,
			UnacknowledgedSessionIds: []string{"a-1", "b-1"}, WaitingFor: "12 sessions to acknowledge update mode"}),
		upd(coordinatorv1.Phase_PHASE_ABORTED, "prepare-timeout: 12 sessions did not acknowledge update mode within 2m0s: a-1, b-1 and 10 more", nil),
	), false, false, now)
	if !errors.Is(err, errUpdateFailed) {
		t.Fatalf("watch of an ABORTED update: %v, want errUpdateFailed", err)
	}
	want := "phase=PREPARING elapsed=1s blocking=0 held=0 old_txns=0 unacked=12 decided=0 pinned=0 unacked_sessions=a-1,b-1,+10 waiting_for=\"12 sessions to acknowledge update mode\"\n" +
		"phase=ABORTED elapsed=1.5s blocking=0 held=0 old_txns=0 unacked=0 decided=0 pinned=0\n" +
		"update u1 of auth to v2: ABORTED after 1.5s: prepare-timeout: 12 sessions did not acknowledge update mode within 2m0s: a-1, b-1 and 10 more\n"
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
