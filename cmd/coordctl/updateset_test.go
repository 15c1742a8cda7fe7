package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The argument errors of a set update are usage errors that say what is
// wrong, before anything is asked of the coordinator.
func TestUpdateSetArgErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"update", "portal=v2", "proc", "--strategy=cv"}, `"proc": want SERVICE=VERSION for every service of a set`},
		{[]string{"update", "portal=", "--strategy=cv"}, `"portal=": want SERVICE=VERSION`},
		{[]string{"update", "=v2", "--strategy=cv"}, `"=v2": want SERVICE=VERSION`},
		{[]string{"update", "portal=v2", "--to", "v2", "--strategy=cv"}, "--to is for one SERVICE"},
		{[]string{"update", "portal", "proc", "--strategy=cv"}, `unexpected argument "proc"`},
		{[]string{"update", "portal=v2", "proc=v2", "--strategy=cv", "--dry-run"}, "--dry-run takes one SERVICE"},
		{[]string{"update", "portal=v2", "proc=v2", "--strategy=cv", "--canary", "5,100"}, "--canary needs one of --step-interval"},
		{[]string{"update", "portal=v2", "proc=v2"}, "--strategy"},
	} {
		expectUsageError(t, tc.args, tc.msg)
	}
}

// `coordctl update portal=v2 proc=v2` against a real coordinator: one
// update with one id moves both services, and the coordinator's refusals
// (a service named twice, a version with no instance) come back as errors
// that say why.
func TestUpdateSetCommand(t *testing.T) {
	ctl := portalProcServer(t)
	if code, _, errOut := ctl("update", "portal=v2", "portal=v2", "--strategy=cv"); code != exitError ||
		!strings.Contains(errOut, `service "portal" is twice in members`) {
		t.Fatalf("duplicate member: exit %d\n%s", code, errOut)
	}
	if code, _, errOut := ctl("update", "portal=v2", "proc=v7", "--strategy=cv"); code != exitError ||
		!strings.Contains(errOut, "proc@v7") {
		t.Fatalf("unknown version: exit %d\n%s", code, errOut)
	}
	code, out, errOut := ctl("update", "portal=v2", "proc=v2", "--strategy=wf", "-w", "--watch-timeout", "30s")
	m := regexp.MustCompile(`Update (\S+) started: portal v1 -> v2, proc v1 -> v2 \(wf\)\.`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("set update: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = ctl("status", m[1])
	if code != 0 || !strings.Contains(out, "Service:   portal v1 -> v2, proc v1 -> v2") || !strings.Contains(out, "DONE") {
		t.Fatalf("status of the set update: exit %d\n%s%s", code, out, errOut)
	}
	for _, svc := range []string{"portal", "proc"} {
		servertest.Eventually(t, 10*time.Second, svc+" to run v2 by default", func() bool {
			_, out, _ := ctl("history", svc)
			return strings.Contains(out, m[1])
		})
	}
	// Back to v1 as a canary of the set, promoted by hand to the switch.
	code, out, errOut = ctl("update", "portal=v1", "proc=v1", "--strategy=cv", "--canary", "50,100", "--manual")
	m = regexp.MustCompile(`Update:\s+(\S+)`).FindStringSubmatch(out)
	if code != 0 || m == nil || !strings.Contains(out, "Service:   portal v2 -> v1, proc v2 -> v1") || !strings.Contains(out, "Canary:    50% → 100%") {
		t.Fatalf("set canary: exit %d\n%s%s", code, out, errOut)
	}
	servertest.Eventually(t, 10*time.Second, "the set canary's first step", func() bool {
		_, out, _ := ctl("status", m[1])
		return strings.Contains(out, "CANARY")
	})
	if code, out, errOut = ctl("promote", m[1]); code != exitOK || !strings.Contains(out, "step 2: 100%: the switch (promoted by an operator)") {
		t.Fatalf("promote the set canary: exit %d\n%s%s", code, out, errOut)
	}
	servertest.Eventually(t, 10*time.Second, "the set canary to finish", func() bool {
		_, out, _ := ctl("status", m[1])
		return strings.Contains(out, "DONE")
	})
	var buf bytes.Buffer
	u := &coordinatorv1.Update{Id: "u1", Service: "portal", FromVersion: "v1", ToVersion: "v2",
		Members: []*coordinatorv1.UpdateMember{{Service: "portal", FromVersion: "v1", ToVersion: "v2"}, {Service: "proc", FromVersion: "v1", ToVersion: "v3"}}}
	if err := renderUpdate(&buf, u, time.Now()); err != nil || !strings.Contains(buf.String(), "portal v1 -> v2, proc v1 -> v3") {
		t.Fatalf("renderUpdate of a set: %v\n%s", err, buf.String())
	}
}
