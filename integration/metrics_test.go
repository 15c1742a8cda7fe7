package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// scrape GETs the replica's /metrics and returns the text and, parsed, a
// Gatherer of exactly what it served.
func (w *world) scrape() (string, prometheus.Gatherer) {
	w.t.Helper()
	resp, err := http.Get("http://" + w.ts.HTTPAddr() + "/metrics")
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		w.t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		w.t.Fatalf("/metrics does not parse: %v", err)
	}
	return string(body), prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		out := make([]*dto.MetricFamily, 0, len(mfs))
		for _, mf := range mfs {
			out = append(out, mf)
		}
		slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
		return out, nil
	})
}

// value is the sample of the exposition line that starts with series (a
// name with its labels in exposition order), or -1.
func value(t *testing.T, body, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// The update metrics follow a CV update through its drain and a WF update
// aborted while WAITING, and everything /metrics serves (the replica's,
// the term's coordinator's, per RPC, Go and process) passes
// client_golang's linter.
func TestUpdateMetricsAndLint(t *testing.T) {
	w := chainWorld(t) // s0 -> s1 -> s2, s1 also at v2
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A transaction that used s1@v1 and will call it again keeps a CV
	// update DRAINING.
	gate := make(chan struct{})
	paused := w.paused(ctx, "s1", 1, gate)
	u := w.startUpdate("s1", "v2", pb.Strategy_STRATEGY_CV, 0, 0)
	w.waitPhase(u.Id, pb.Phase_PHASE_DRAINING)
	// Calls to s1 now are decided (to v2, each first use pinned first).
	for i := range 5 {
		root := &plan{svc: "s0", calls: []call{{to: "s1", child: &plan{svc: "s1"}}}}
		if err := w.run(ctx, fmt.Sprintf("m-%d", i), root); err != nil {
			t.Fatal(err)
		}
	}
	body, _ := w.scrape()
	for _, s := range []string{
		`coordinator_update_phase{phase="draining",service="s1",strategy="cv"}`,
		`coordinator_update_held_calls{service="s1"}`,
		`coordinator_updates_started_total{strategy="cv"}`,
	} {
		if v := value(t, body, s); v < 0 {
			t.Errorf("during the drain, /metrics lacks %s", s)
		}
	}
	if v := value(t, body, `coordinator_update_phase{phase="draining",service="s1",strategy="cv"}`); v != 1 {
		t.Errorf("coordinator_update_phase draining = %v, want 1", v)
	}
	close(gate)
	if err := paused(); err != nil {
		t.Fatal(err)
	}
	if got := w.waitFinished(u.Id, time.Minute); got.Phase != pb.Phase_PHASE_DONE {
		t.Fatalf("CV update: %v", got.Phase)
	}

	// A WF update held WAITING by a paused transaction, then aborted.
	w.add("s2", "v2")
	gate2 := make(chan struct{})
	paused2 := w.paused(ctx, "s2", 1, gate2)
	u2 := w.startUpdate("s2", "v2", pb.Strategy_STRATEGY_WF, 0, 0)
	w.waitPhase(u2.Id, pb.Phase_PHASE_WAITING)
	body, _ = w.scrape()
	if v := value(t, body, `coordinator_update_phase{phase="waiting",service="s2",strategy="wf"}`); v != 1 {
		t.Errorf("coordinator_update_phase of the WF update while WAITING = %v, want 1", v)
	}
	if _, err := w.ts.Admin.AbortUpdate(ctx, &pb.AbortUpdateRequest{Id: u2.Id, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	w.waitFinished(u2.Id, time.Minute)
	close(gate2)
	if err := paused2(); err != nil {
		t.Fatal(err)
	}

	body, g := w.scrape()
	for series, want := range map[string]float64{
		`coordinator_updates_started_total{strategy="cv"}`:                                 1,
		`coordinator_updates_started_total{strategy="wf"}`:                                 1,
		`coordinator_updates_started_total{strategy="bf"}`:                                 0,
		`coordinator_updates_ended_total{outcome="done",strategy="cv"}`:                    1,
		`coordinator_updates_ended_total{outcome="aborted",strategy="wf"}`:                 1,
		`coordinator_updates_ended_total{outcome="failed",strategy="cv"}`:                  0,
		`coordinator_update_duration_seconds_count{outcome="done",strategy="cv"}`:          1,
		`coordinator_update_phase_duration_seconds_count{phase="draining",strategy="cv"}`:  1,
		`coordinator_update_phase_duration_seconds_count{phase="preparing",strategy="wf"}`: 1,
		`coordinator_update_phase_duration_seconds_count{phase="waiting",strategy="wf"}`:   1,
	} {
		if got := value(t, body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	for _, series := range []string{
		`coordinator_update_call_decision_seconds_count{strategy="cv"}`,
		`coordinator_pin_commit_seconds_count`,
		`coordinator_update_call_holds_total{reason="phase_write"}`,
	} {
		if v := value(t, body, series); v < 0 || (series != `coordinator_update_call_holds_total{reason="phase_write"}` && v < 5) {
			t.Errorf("%s = %v: want the 5 calls decided during the drain, or more", series, v)
		}
	}
	if strings.Contains(body, `coordinator_update_phase{`) {
		t.Errorf("coordinator_update_phase still reports a finished update:\n%s", grepLines(body, "coordinator_update_phase{"))
	}
	if strings.Contains(body, `type="unspecified"`) || strings.Contains(body, `type="UNSPECIFIED"`) {
		t.Errorf("an event type label names the UNSPECIFIED value:\n%s", grepLines(body, "coordinator_events_total"))
	}
	if v := value(t, body, `coordinator_events_total{type="BEGIN"}`); v < 1 {
		t.Errorf(`coordinator_events_total{type="BEGIN"} = %v`, v)
	}
	for _, s := range []string{`coordinator_late_events_total{reason="txn_ended"}`, `grpc_server_handled_total{grpc_code="OK",grpc_method="StartUpdate",grpc_service="coordinator.v1.AdminService",grpc_type="unary"}`} {
		if value(t, body, s) < 0 {
			t.Errorf("/metrics lacks %s", s)
		}
	}

	problems, err := testutil.GatherAndLint(g)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func grepLines(body, substr string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
