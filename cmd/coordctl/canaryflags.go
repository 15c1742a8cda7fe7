package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/durationpb"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// canaryFlags are update's canary flags (DESIGN.md §4.7): the steps, how
// they move on, and the analysis.
type canaryFlags struct {
	steps          string
	stepInterval   time.Duration
	manual         bool
	maxErrorRate   float64
	maxP99         time.Duration
	analysisWindow time.Duration
}

func (cf *canaryFlags) add(f *pflag.FlagSet) {
	f.StringVar(&cf.steps, "canary", "", "cv: run as a canary with these weights in percent, e.g. 5,25,50,100 (the last 100: the switch); needs --step-interval or --manual")
	f.DurationVar(&cf.stepInterval, "step-interval", 0, "with --canary: how long each step lasts before the next")
	f.BoolVar(&cf.manual, "manual", false, "with --canary: steps move on only by coordctl promote ID")
	f.Float64Var(&cf.maxErrorRate, "max-error-rate", 0, "with --canary: abort when the new version's share of failed calls exceeds the old one's by more than this (e.g. 0.05)")
	f.DurationVar(&cf.maxP99, "max-p99", 0, "with --canary: abort when the new version's p99 latency exceeds the old one's by more than this")
	f.DurationVar(&cf.analysisWindow, "analysis-window", 0, "with --canary: the window the analysis looks at (0: the server's default, 1m)")
}

// apply checks the flags and sets them on req.
func (cf *canaryFlags) apply(req *coordinatorv1.StartUpdateRequest) error {
	if cf.steps == "" {
		if cf.stepInterval != 0 || cf.manual || cf.maxErrorRate != 0 || cf.maxP99 != 0 || cf.analysisWindow != 0 {
			return usageErrorf("--step-interval, --manual, --max-error-rate, --max-p99 and --analysis-window need --canary")
		}
		return nil
	}
	if req.Strategy != coordinatorv1.Strategy_STRATEGY_CV {
		return usageErrorf("--canary needs --strategy=cv: a canary is cv with weights")
	}
	if cf.manual == (cf.stepInterval > 0) {
		return usageErrorf("--canary needs one of --step-interval DURATION (steps move on by themselves) or --manual (by coordctl promote)")
	}
	if cf.stepInterval < 0 || cf.maxP99 < 0 || cf.analysisWindow < 0 || cf.maxErrorRate < 0 || cf.maxErrorRate > 1 {
		return usageErrorf("--step-interval, --max-p99 and --analysis-window must not be negative, --max-error-rate must be 0 to 1")
	}
	for _, s := range strings.Split(cf.steps, ",") {
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(s), "%"), 10, 32)
		if err != nil {
			return usageErrorf("--canary %q: %q is not a percentage", cf.steps, s)
		}
		req.CanarySteps = append(req.CanarySteps, uint32(n))
	}
	req.StepInterval = durationpb.New(cf.stepInterval)
	req.MaxErrorRate = cf.maxErrorRate
	req.MaxP99 = durationpb.New(cf.maxP99)
	if cf.analysisWindow > 0 {
		req.AnalysisWindow = durationpb.New(cf.analysisWindow)
	}
	return nil
}

// canaryProgress is a canary's part of the progress line: its step and
// weight, what each step assigned, its analysis.
func canaryProgress(u *coordinatorv1.Update) string {
	c := u.GetCanary()
	if c == nil || len(c.GetSteps()) == 0 {
		return ""
	}
	step := min(int(c.GetStep()), len(c.GetSteps())-1)
	line := fmt.Sprintf(" canary_step=%d/%d weight=%d%%", step+1, len(c.GetSteps()), c.GetSteps()[step])
	if c.GetPaused() {
		line += " paused"
	}
	if st := c.GetStepsServed(); len(st) > 0 {
		last := st[len(st)-1]
		line += fmt.Sprintf(" served_pct=%s", servedPct(last))
	}
	if a := u.GetProgress().GetCanaryAnalysis(); a != nil {
		line += fmt.Sprintf(" old_errors=%d/%d new_errors=%d/%d old_p99=%v new_p99=%v",
			a.GetOldVersion().GetErrors(), a.GetOldVersion().GetCalls(), a.GetNewVersion().GetErrors(), a.GetNewVersion().GetCalls(),
			a.GetOldVersion().GetP99().AsDuration(), a.GetNewVersion().GetP99().AsDuration())
	}
	return line
}

// servedPct is the share of a step's transactions assigned the new
// version, in percent ("-" before any).
func servedPct(s *coordinatorv1.CanaryStep) string {
	n := s.GetOldTransactions() + s.GetNewTransactions()
	if n == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*float64(s.GetNewTransactions())/float64(n), 'f', 1, 64)
}

// renderCanary writes a canary's steps: asked and served weights.
func renderCanary(w io.Writer, u *coordinatorv1.Update) error {
	c := u.GetCanary()
	if c == nil {
		return nil
	}
	how := "manual (coordctl promote " + u.GetId() + ")"
	if iv := c.GetStepInterval().AsDuration(); iv > 0 {
		how = "every " + iv.String()
	}
	if c.GetPaused() {
		how += ", paused"
	}
	fmt.Fprintf(w, "Canary:    %s; steps move on %s\n", joinPct(c.GetSteps()), how)
	var limits []string
	if r := c.GetMaxErrorRate(); r > 0 {
		limits = append(limits, fmt.Sprintf("max error rate +%.1f%%", 100*r))
	}
	if d := c.GetMaxP99().AsDuration(); d > 0 {
		limits = append(limits, fmt.Sprintf("max p99 +%v", d))
	}
	if len(limits) > 0 {
		fmt.Fprintf(w, "Analysis:  %s over %v, relative to %s\n", strings.Join(limits, ", "), c.GetAnalysisWindow().AsDuration(), u.GetFromVersion())
	}
	if len(c.GetStepsServed()) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	t := newTable(w, "STEP", "ASKED", "OLD", "NEW", "SERVED", "STARTED")
	for i, s := range c.GetStepsServed() {
		t.row(strconv.Itoa(i+1), fmt.Sprintf("%d%%", s.GetPercent()), strconv.FormatUint(s.GetOldTransactions(), 10),
			strconv.FormatUint(s.GetNewTransactions(), 10), servedPct(s)+"%", formatTime(s.GetStartedAt()))
	}
	return t.flush()
}

func joinPct(steps []uint32) string {
	var parts []string
	for _, s := range steps {
		parts = append(parts, fmt.Sprintf("%d%%", s))
	}
	return strings.Join(parts, " → ")
}
