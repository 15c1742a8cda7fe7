package main

import (
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// renderPlan writes what an update would do now (update --dry-run);
// unless wide, every line fits a terminal (constraints are wrapped). The
// target's instances "acknowledged" have applied their routing snapshot:
// they are ready to take calls.
func renderPlan(w io.Writer, p *coordinatorv1.UpdatePlan, wide bool, now time.Time) error {
	width := termWidth
	if wide {
		width = 0
	}
	line := func(label, value string) { writeField(w, 12, label, value, width) }
	verdict := "would start now"
	if !p.GetWouldStart() {
		verdict = "would be refused: " + p.GetRefused()
	}
	line("Dry run", fmt.Sprintf("%s %s -> %s (%s): %s", p.GetService(), p.GetFromVersion(), p.GetToVersion(),
		strategyName(p.GetStrategy()), verdict))
	line("Target", fmt.Sprintf("%s@%s: %s registered, %d connected, %d acknowledged",
		p.GetService(), p.GetToVersion(), plural(int(p.GetTargetInstances()), "instance", "instances"),
		p.GetTargetConnected(), p.GetTargetAcknowledged()))
	free := "yes"
	if !p.GetFree() {
		free = "no: " + plural(int(p.GetBlocking()), "transaction blocks it", "transactions block it")
		if m := p.GetResyncMissing(); m > 0 {
			free += fmt.Sprintf(", %s not back since the failover", plural(int(m), "session", "sessions"))
		}
	}
	line("Free", free)
	line("Callers", fmt.Sprintf("%s can call %s", plural(int(p.GetCallerSessions()), "session", "sessions"), p.GetService()))
	bound := func(d *durationpb.Duration) string {
		if d.AsDuration() == 0 {
			return "none"
		}
		return formatDuration(d)
	}
	line("Bounds", fmt.Sprintf("timeout %s, max-block %s, prepare-timeout %s", bound(p.GetTimeout()),
		bound(p.GetMaxBlock()), bound(p.GetPrepareTimeout())))
	if u := p.GetInProgress(); u != nil {
		line("In progress", updateCell(u, now))
	}
	if len(p.GetConstraints()) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "What the strategy would do:")
		for _, c := range p.GetConstraints() {
			for _, l := range wrap(c, width, "  - ", "    ") {
				fmt.Fprintln(w, l)
			}
		}
	}
	if len(p.GetBlockers()) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	if wide {
		t := newTable(w, "BLOCKING TXN", "PAST", "FUTURE VIA", "REASON")
		for _, b := range p.GetBlockers() {
			t.row(b.GetTxnId(), blockerPast(b), b.GetFutureVia(), b.GetReason())
		}
		return t.flush()
	}
	t := newTable(w, "BLOCKING TXN", "PAST", "FUTURE VIA")
	for _, b := range p.GetBlockers() {
		t.row(fit(b.GetTxnId(), 40), fit(blockerPast(b), 16), fit(b.GetFutureVia(), 18))
	}
	return t.flush()
}
