package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
)

// A canary through coordctl: its flags checked, its steps and weights shown,
// pause, resume and promote to the switch; status shows the served weights.
func TestCanaryCommands(t *testing.T) {
	ts := servertest.Start(t, "")
	ctl := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(append([]string{"--server", ts.GRPCAddr()}, args...)...)
	}
	portal := ts.LongSidecar("portal-1", "portal", "v1", "auth")
	ts.LongSidecar("auth-1", "auth", "v1")
	ts.LongSidecar("auth-2", "auth", "v2")

	for _, bad := range [][]string{
		{"--canary", "5,25,100"}, // neither --step-interval nor --manual
		{"--canary", "5,25,100", "--manual", "--step-interval", "1m"}, // both
		{"--manual"}, // without --canary
		{"--canary", "5,x,100", "--manual"},
	} {
		if code, _, errOut := ctl(append([]string{"update", "auth", "--to", "v2", "--strategy=cv"}, bad...)...); code != exitUsage {
			t.Errorf("update %v: exit %d, want usage (%s)", bad, code, errOut)
		}
	}
	if code, _, errOut := ctl("update", "auth", "--to", "v2", "--strategy=bf", "--canary", "50,100", "--manual"); code != exitUsage || !strings.Contains(errOut, "--strategy=cv") {
		t.Errorf("bf canary: exit %d: %s", code, errOut)
	}
	if code, _, errOut := ctl("update", "auth", "--to", "v2", "--strategy=cv", "--canary", "50,25,100", "--manual"); code != 1 || !strings.Contains(errOut, "must increase") {
		t.Errorf("decreasing weights: exit %d: %s", code, errOut)
	}

	code, out, errOut := ctl("update", "auth", "--to", "v2", "--strategy=cv", "--canary", "50,100", "--manual", "--max-error-rate", "0.05")
	if code != exitOK || !strings.Contains(out, "Canary:    50% → 100%; steps move on manual") || !strings.Contains(out, "Analysis:  max error rate +5.0%") {
		t.Fatalf("update --canary: exit %d\n%s%s", code, out, errOut)
	}
	id := regexp.MustCompile(`(?m)^Update:\s+(\S+)$`).FindStringSubmatch(out)[1]
	servertest.Eventually(t, 10e9, "CANARY", func() bool {
		_, out, _ := ctl("status", id)
		return strings.Contains(out, "Phase:     CANARY")
	})
	for i := range 4 {
		txn := servertest.TxnID(i + 1)
		servertest.Send(t, portal, simsidecar.Begin(txn, 1))
		if _, err := portal.RouteCall(t.Context(), txn, 1, "auth", 2); err != nil {
			t.Fatal(err)
		}
		servertest.Send(t, portal, simsidecar.Return(txn, 2), simsidecar.End(txn))
	}
	code, out, _ = ctl("status", id)
	if code != exitOK || !regexp.MustCompile(`(?m)^1\s+50%\s+2\s+2\s+50.0%`).MatchString(out) || !strings.Contains(out, "canary_step=1/2 weight=50% served_pct=50.0") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	if code, out, _ = ctl("pause", id); code != exitOK || !strings.Contains(out, "manual (coordctl promote "+id+"), paused") {
		t.Fatalf("pause: exit %d\n%s", code, out)
	}
	if code, _, errOut = ctl("pause", id); code != 1 || !strings.Contains(errOut, "paused=true already") {
		t.Fatalf("pause twice: exit %d: %s", code, errOut)
	}
	if code, out, _ = ctl("resume", id); code != exitOK || strings.Contains(out, ", paused") || strings.Contains(out, "weight=50% paused") {
		t.Fatalf("resume: exit %d\n%s", code, out)
	}
	if code, out, _ = ctl("promote", id); code != exitOK || !strings.Contains(out, "step 2: 100%: the switch (promoted by an operator)") {
		t.Fatalf("promote: exit %d\n%s", code, out)
	}
	servertest.Eventually(t, 10e9, "DONE", func() bool {
		_, out, _ := ctl("status", id)
		return strings.Contains(out, "Phase:     DONE")
	})
}
