package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// errUpdateFailed makes the exit status 1 when a watched update ends
// ABORTED or FAILED; the summary line already said why.
var errUpdateFailed = errors.New("update did not succeed")

func phaseName(p coordinatorv1.Phase) string {
	return strings.TrimPrefix(p.String(), "PHASE_")
}

func strategyName(s coordinatorv1.Strategy) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "STRATEGY_"))
}

func finishedPhase(p coordinatorv1.Phase) bool {
	return p == coordinatorv1.Phase_PHASE_DONE || p == coordinatorv1.Phase_PHASE_ABORTED || p == coordinatorv1.Phase_PHASE_FAILED
}

// elapsed is how long u has run (until it finished, or until now).
func elapsed(u *coordinatorv1.Update, now time.Time) time.Duration {
	if u.GetCreatedAt() == nil {
		return 0
	}
	end := now
	if u.GetFinishedAt() != nil {
		end = u.GetFinishedAt().AsTime()
	}
	return end.Sub(u.GetCreatedAt().AsTime()).Round(time.Millisecond)
}

// renderUpdate writes one update in detail, with its history.
func renderUpdate(w io.Writer, u *coordinatorv1.Update, now time.Time) error {
	fmt.Fprintf(w, "Update:    %s\n", u.GetId())
	fmt.Fprintf(w, "Service:   %s\n", updateServices(u))
	fmt.Fprintf(w, "Strategy:  %s\n", strategyName(u.GetStrategy()))
	fmt.Fprintf(w, "Phase:     %s\n", phaseName(u.GetPhase()))
	if u.GetReason() != "" {
		fmt.Fprintf(w, "Reason:    %s\n", u.GetReason())
	}
	fmt.Fprintf(w, "Elapsed:   %s\n", elapsed(u, now))
	if p := u.GetProgress(); p != nil {
		fmt.Fprintf(w, "Progress:  %s\n", progressLine(u, now))
	}
	if err := renderCanary(w, u); err != nil {
		return err
	}
	if len(u.GetHistory()) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	t := newTable(w, "PHASE", "AT", "REASON")
	for _, h := range u.GetHistory() {
		t.row(phaseName(h.GetPhase()), formatTime(h.GetAt()), h.GetReason())
	}
	return t.flush()
}

// renderUpdates writes a table of updates.
func renderUpdates(w io.Writer, r *coordinatorv1.ListUpdatesResponse, now time.Time) error {
	if len(r.GetUpdates()) == 0 {
		fmt.Fprintln(w, "No updates.")
		return nil
	}
	t := newTable(w, "ID", "SERVICE", "VERSIONS", "STRATEGY", "PHASE", "ELAPSED", "REASON")
	for _, u := range r.GetUpdates() {
		t.row(u.GetId(), u.GetService(), u.GetFromVersion()+" -> "+u.GetToVersion(),
			strategyName(u.GetStrategy()), phaseName(u.GetPhase()), elapsed(u, now).String(), u.GetReason())
	}
	return t.flush()
}

// progressLine is the one-line state of an update, for --watch.
func progressLine(u *coordinatorv1.Update, now time.Time) string {
	p := u.GetProgress()
	line := fmt.Sprintf("phase=%s elapsed=%s blocking=%d held=%d old_txns=%d unacked=%d decided=%d pinned=%d",
		phaseName(u.GetPhase()), elapsed(u, now), p.GetBlocking(), p.GetHeldCalls(), p.GetOldTransactions(),
		p.GetUnacknowledgedSessions(), p.GetDecidedCalls(), p.GetPinnedCalls())
	if ids := p.GetUnacknowledgedSessionIds(); len(ids) > 0 {
		line += " unacked_sessions=" + strings.Join(ids, ",")
		if more := int(p.GetUnacknowledgedSessions()) - len(ids); more > 0 {
			line += fmt.Sprintf(",+%d", more)
		}
	}
	line += canaryProgress(u)
	if w := p.GetWaitingFor(); w != "" {
		line += fmt.Sprintf(" waiting_for=%q", w)
	}
	return line
}

// summaryLine ends a watch.
func summaryLine(u *coordinatorv1.Update, now time.Time) string {
	s := fmt.Sprintf("update %s of %s to %s: %s after %s", u.GetId(), u.GetService(), u.GetToVersion(),
		phaseName(u.GetPhase()), elapsed(u, now))
	if u.GetReason() != "" {
		s += ": " + u.GetReason()
	}
	return s
}

// outcome is the command's result for a finished update.
func outcome(u *coordinatorv1.Update) error {
	if u.GetPhase() == coordinatorv1.Phase_PHASE_DONE {
		return nil
	}
	return errUpdateFailed
}
