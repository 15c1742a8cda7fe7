package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
)

// The argument errors of the lane commands are usage errors that say what
// is wrong, before anything is asked of the coordinator.
func TestLaneArgErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"lane"}, "want an action"},
		{[]string{"lane", "rename"}, `unknown action "rename"`},
		{[]string{"lane", "create"}, "missing argument NAME"},
		{[]string{"lane", "create", "gray"}, "missing SERVICE=VERSION"},
		{[]string{"lane", "create", "gray", "proc"}, `"proc": want SERVICE=VERSION`},
		{[]string{"lane", "create", "gray", "proc="}, `"proc=": want SERVICE=VERSION`},
		{[]string{"lane", "delete"}, "missing argument NAME"},
		{[]string{"lane", "promote", "gray"}, "--strategy is required"},
		{[]string{"lane", "promote", "gray", "--strategy=cv", "--dry-run"}, "--dry-run is not supported"},
	} {
		expectUsageError(t, tc.args, tc.msg)
	}
}

// `coordctl lane create|list|promote|delete` against a real coordinator:
// the lane is listed with its selector, the coordinator's refusals come
// back as errors that say why, a promotion is one update that is watched
// to DONE, after which the lane is gone.
func TestLaneCommands(t *testing.T) {
	ctl := portalProcServer(t)
	if code, _, errOut := ctl("lane", "create", "gray", "proc=v7"); code != exitError || !strings.Contains(errOut, `version v7 of service "proc" is not known`) {
		t.Fatalf("unknown version: exit %d\n%s", code, errOut)
	}
	code, out, errOut := ctl("lane", "create", "gray", "proc=v2", "portal=v2", "--header", "x-env")
	if code != 0 || !strings.Contains(out, "Lane gray created: portal=v2 proc=v2, selected by x-env: gray.") {
		t.Fatalf("create: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = ctl("lane", "list")
	if code != 0 || !regexp.MustCompile(`(?m)^gray\s+portal=v2 proc=v2\s+x-env: gray\s+-\s*$`).MatchString(out) {
		t.Fatalf("list: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = ctl("lane", "list", "-o", "json")
	if code != 0 || !strings.Contains(out, `"name":"gray"`) && !strings.Contains(out, `"name": "gray"`) {
		t.Fatalf("list -o json: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = ctl("lane", "promote", "gray", "--strategy=wf", "-w", "--watch-timeout", "30s")
	if code != 0 || !regexp.MustCompile(`Update \S+ started: portal v1 -> v2, proc v1 -> v2 \(wf\)\.`).MatchString(out) {
		t.Fatalf("promote: exit %d\n%s%s", code, out, errOut)
	}
	servertest.Eventually(t, 10*time.Second, "the promoted lane to be deleted", func() bool {
		_, out, _ := ctl("lane", "list")
		return !strings.Contains(out, "gray")
	})
	if code, _, errOut := ctl("lane", "delete", "gray"); code != exitError || !strings.Contains(errOut, `unknown lane "gray"`) {
		t.Fatalf("delete the promoted lane: exit %d\n%s", code, errOut)
	}
	if code, out, errOut := ctl("lane", "create", "blue", "proc=v1"); code != 0 {
		t.Fatalf("create blue: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := ctl("lane", "delete", "blue"); code != 0 || !strings.Contains(out, "Lane blue deleted.") {
		t.Fatalf("delete blue: exit %d\n%s%s", code, out, errOut)
	}
}
