package main

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The operators' commands against a real coordinator, as an SRE would run
// them: services and service (what runs where), update without --to,
// --dry-run, --watch with its id first and --watch-timeout, freeness and
// its exit statuses, history, rollback and its refusals.
func TestOperatorCommands(t *testing.T) {
	ts := servertest.Start(t, "")
	addr := ts.GRPCAddr()
	ctl := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(append([]string{"--server", addr}, args...)...)
	}
	portal := ts.LongSidecar("portal-1", "portal", "v1", "auth-service")
	ts.LongSidecar("auth-1", "auth-service", "v1")
	t1 := servertest.TxnID(1)
	servertest.Send(t, portal, simsidecar.Begin(t1, 1), simsidecar.Call(t1, 1, "auth-service", 2), simsidecar.Return(t1, 2))

	// No version but the default: update without --to is a usage error
	// that lists the registered versions.
	code, out, errOut := ctl("update", "auth-service", "--strategy=cv")
	if code != exitUsage || out != "" || !strings.Contains(errOut,
		"auth-service has no registered version other than its default v1 (registered: v1 (default, 1 instance))") {
		t.Fatalf("update with no other version: exit %d\n%s%s", code, out, errOut)
	}
	auth2 := ts.LongSidecar("auth-2", "auth-service", "v2")

	// services: one row per service, fitting a terminal.
	code, out, errOut = ctl("services")
	if code != exitOK || !regexp.MustCompile(`(?m)^auth-service\s+v1\s+v1:1/1 v2:1/0\s+no\s+-\s+-$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^portal\s+v1\s+v1:1/1\s+no\s+-\s+-$`).MatchString(out) {
		t.Fatalf("services: exit %d\n%s%s", code, out, errOut)
	}
	fitsTerminal(t, "services", out)
	if code, out, _ = ctl("services", "-o", "wide"); code != exitOK || !strings.Contains(out, "BLOCKING") {
		t.Fatalf("services -o wide: exit %d\n%s", code, out)
	}
	code, out, _ = ctl("services", "-o", "json")
	var list coordinatorv1.ListServicesResponse
	if err := protojson.Unmarshal([]byte(out), &list); code != exitOK || err != nil || list.Total != 2 || list.Services[0].Name != "auth-service" {
		t.Fatalf("services -o json: exit %d, %v\n%s", code, err, out)
	}

	// service NAME: versions, instances, transactions.
	code, out, errOut = ctl("service", "auth-service")
	for _, want := range []string{"Service:      auth-service", "Default:      v1", "Free:         no: 1 transaction blocks it",
		"Update:       none in progress", "auth-1", "auth-2", t1} {
		if code != exitOK || !strings.Contains(out, want) {
			t.Fatalf("service auth-service: exit %d, missing %q\n%s%s", code, want, out, errOut)
		}
	}
	fitsTerminal(t, "service", out)
	if code, out, errOut = ctl("service", "nosuch"); code != exitError || !strings.Contains(errOut, `unknown service "nosuch"`) {
		t.Fatalf("service nosuch: exit %d\n%s%s", code, out, errOut)
	}

	// freeness: 3 when not free, whether asked once or waited for.
	if code, out, errOut = ctl("freeness", "auth-service"); code != exitNotFree || !strings.Contains(out, "Free:      no") || errOut != "" {
		t.Fatalf("freeness of a blocked service: exit %d, stdout %q, stderr %q; want %d", code, out, errOut, exitNotFree)
	}
	code, out, errOut = ctl("freeness", "auth-service", "--wait", "--wait-timeout", "300ms")
	if code != exitNotFree || !strings.Contains(errOut, "auth-service is still not free after --wait-timeout 300ms") {
		t.Fatalf("freeness --wait that times out: exit %d\n%s%s", code, out, errOut)
	}
	if code, _, errOut = ctl("freeness", "nosuch"); code != exitError {
		t.Fatalf("freeness of an unknown service: exit %d, want %d (a failed call)\n%s", code, exitError, errOut)
	}

	// --dry-run (with the target found as update would) starts nothing.
	servertest.Eventually(t, 10*time.Second, "auth-2 to acknowledge its routing", func() bool {
		p, err := ts.Admin.DryRunUpdate(context.Background(), &coordinatorv1.StartUpdateRequest{Service: "auth-service",
			ToVersion: "v2", Strategy: coordinatorv1.Strategy_STRATEGY_WF})
		return err == nil && p.TargetAcknowledged == 1
	})
	code, out, errOut = ctl("update", "auth-service", "--strategy=wf", "--timeout=1m", "--dry-run")
	for _, want := range []string{"Dry run:     auth-service v1 -> v2 (wf): would start now",
		"auth-service@v2: 1 instance registered, 1 connected, 1 acknowledged", "Free:        no: 1 transaction blocks it",
		"WF: switches to v2 only once", "aborts at timeout 1m0s", t1} {
		if code != exitOK || !strings.Contains(out, want) {
			t.Fatalf("update --dry-run: exit %d, missing %q\n%s%s", code, want, out, errOut)
		}
	}
	fitsTerminal(t, "update --dry-run", out)
	code, out, errOut = ctl("update", "auth-service", "--to", "v9", "--strategy=cv", "--dry-run")
	if code != exitError || !strings.Contains(out, "(cv): would be refused: no connected instance") ||
		!strings.Contains(errOut, "Error: the update would be refused: no connected instance of auth-service@v9") {
		t.Fatalf("update --dry-run to a version with no instance: exit %d\n%s%s", code, out, errOut)
	}
	if _, out, _ = ctl("history", "auth-service"); out != "No updates of auth-service.\n" {
		t.Fatalf("a dry run started an update:\n%s", out)
	}
	if code, out, errOut = ctl("history", "nosuch"); code != exitError || out != "" || !strings.Contains(errOut, `unknown service "nosuch"`) {
		t.Fatalf("history of an unknown service: exit %d\n%s%s", code, out, errOut)
	}

	// update without --to goes to v2; the watch prints the id first and
	// stops at --watch-timeout (CV drains t1, which is still running).
	code, out, errOut = ctl("update", "auth-service", "--strategy=cv", "-w", "--watch-timeout", "1s")
	m := regexp.MustCompile(`^Update (\S+) started: auth-service v1 -> v2 \(cv\)\.\n`).FindStringSubmatch(out)
	if code != exitError || m == nil || !strings.Contains(errOut, "stopped watching update "+m[1]+" after --watch-timeout 1s; it goes on") {
		t.Fatalf("update -w --watch-timeout: exit %d\n%s%s", code, out, errOut)
	}
	id := m[1]
	servertest.Eventually(t, 20*time.Second, "services to show the update draining", func() bool {
		code, out, _ := ctl("services")
		return code == exitOK && regexp.MustCompile(`(?m)^auth-service\s+v2\s+v1:1/1 v2:1/0\s+no\s+DRAINING\s+-$`).MatchString(out)
	})
	// graph --dot shows the versions and the update in progress.
	code, out, errOut = ctl("graph", "--dot")
	if code != exitOK || !strings.Contains(out, `"auth-service" [label="auth-service\ndefault v2\nsessions v1:1 v2:1\nused_by=1 blocking=1\nupdating v1 -> v2: DRAINING"`) ||
		!strings.Contains(out, "peripheries=2") {
		t.Fatalf("graph --dot during the update: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = ctl("rollback", "auth-service")
	if code != exitError || !strings.Contains(errOut, "cannot roll back auth-service: it is being updated by "+id) {
		t.Fatalf("rollback during an update: exit %d\n%s", code, errOut)
	}
	servertest.Send(t, portal, simsidecar.End(t1))
	if code, out, errOut = ctl("status", id, "-w", "--watch-timeout", "30s"); code != exitOK || !strings.Contains(out, ": DONE after") {
		t.Fatalf("status -w: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut = ctl("freeness", "auth-service"); code != exitOK || !strings.Contains(out, "Free:      yes") {
		t.Fatalf("freeness of a free service: exit %d\n%s%s", code, out, errOut)
	}

	// rollback: a dry run, then a new update back to v1 with cv.
	code, out, errOut = ctl("rollback", "auth-service", "--dry-run")
	if code != exitOK || !strings.Contains(out, "A rollback would take auth-service from v2 back to v1 (undoing update "+id+") with cv.") ||
		!strings.Contains(out, "auth-service v2 -> v1 (cv): would start now") {
		t.Fatalf("rollback --dry-run: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = ctl("rollback", "auth-service", "-w")
	m = regexp.MustCompile(`(?m)^Update (\S+) started: auth-service v2 -> v1 \(cv\)\.$`).FindStringSubmatch(out)
	if code != exitOK || !strings.HasPrefix(out, "Rolling back auth-service from v2 back to v1") || m == nil || !strings.Contains(out, ": DONE after") {
		t.Fatalf("rollback -w: exit %d\n%s%s", code, out, errOut)
	}
	back := m[1]

	// history: newest first, fitting a terminal.
	code, out, _ = ctl("history", "auth-service")
	if code != exitOK || !regexp.MustCompile(`(?s)`+back+`\s+v2 -> v1\s+cv\s+DONE.*\n`+id+`\s+v1 -> v2\s+cv\s+DONE`).MatchString(out) {
		t.Fatalf("history: exit %d\n%s", code, out)
	}
	fitsTerminal(t, "history", out)
	if code, out, _ = ctl("history", "auth-service", "-o", "wide"); code != exitOK || !strings.Contains(out, "FINISHED") {
		t.Fatalf("history -o wide: exit %d\n%s", code, out)
	}
	if code, out, _ = ctl("service", "auth-service"); code != exitOK || !strings.Contains(out, "Default:      v1") ||
		!strings.Contains(out, "Last update:  "+back+" cv v2->v1 DONE") {
		t.Fatalf("service after the rollback: exit %d\n%s", code, out)
	}

	// A rollback to a version with no instance is refused; nothing starts.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := auth2.Deregister(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = ctl("rollback", "auth-service")
	if code != exitError || !strings.Contains(errOut, "cannot roll back auth-service to v2 (the version before update "+back+
		"): no instance of auth-service@v2 is registered (registered: v1 (default, 1 instance))") {
		t.Fatalf("rollback to a version with no instance: exit %d\n%s", code, errOut)
	}
	if _, out, _ = ctl("history", "auth-service"); strings.Count(out, "DONE") != 2 || strings.Contains(out, "PREPARING") {
		t.Fatalf("a refused rollback started an update:\n%s", out)
	}

	// freeness --wait returns 0 once the blocking transaction ends.
	t2 := servertest.TxnID(2)
	servertest.Send(t, portal, simsidecar.Begin(t2, 1), simsidecar.Call(t2, 1, "auth-service", 2), simsidecar.Return(t2, 2))
	done := make(chan struct{})
	go func() {
		defer close(done)
		code, out, errOut = ctl("freeness", "auth-service", "--wait", "--wait-timeout", "30s")
	}()
	time.Sleep(3 * freenessPoll)
	select {
	case <-done:
		t.Fatalf("freeness --wait ended while t2 blocks the service: exit %d\n%s%s", code, out, errOut)
	default:
	}
	servertest.Send(t, portal, simsidecar.End(t2))
	<-done
	if code != exitOK || !strings.Contains(out, "Free:      yes") {
		t.Fatalf("freeness --wait: exit %d\n%s%s", code, out, errOut)
	}

	// Two versions other than the default: update without --to is a usage
	// error that lists them all, and starts nothing.
	ts.LongSidecar("auth-3", "auth-service", "v2")
	ts.LongSidecar("auth-4", "auth-service", "v3")
	code, out, errOut = ctl("update", "auth-service", "--strategy=cv")
	if code != exitUsage || out != "" || !strings.Contains(errOut, "auth-service has 2 registered versions other than its default v1 "+
		"(registered: v1 (default, 1 instance), v2 (1 instance), v3 (1 instance)); pick one with --to") {
		t.Fatalf("update with two other versions: exit %d\n%s%s", code, out, errOut)
	}
	if _, out, _ = ctl("history", "auth-service"); strings.Count(out, "DONE") != 2 || strings.Contains(out, "PREPARING") {
		t.Fatalf("an update without --to among several versions started one:\n%s", out)
	}

	// service NAME in JSON (the API's answer) and wide (registration times).
	code, out, errOut = ctl("service", "auth-service", "-o", "json")
	var s coordinatorv1.ServiceState
	if err := protojson.Unmarshal([]byte(out), &s); code != exitOK || err != nil || s.Name != "auth-service" ||
		s.DefaultVersion != "v1" || len(s.Versions) != 3 || len(s.Versions[2].InstanceList) != 1 ||
		s.Versions[2].InstanceList[0].InstanceId != "auth-4" {
		t.Fatalf("service -o json: exit %d, %v\n%s%s", code, err, out, errOut)
	}
	code, out, errOut = ctl("service", "auth-service", "-o", "wide")
	if code != exitOK || !regexp.MustCompile(`(?m)^INSTANCE\s+VERSION\s+CONNECTED\s+ADDRESS\s+REGISTERED$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^auth-4\s+v3\s+yes\s+127\.0\.0\.1:1\s+20\d\d-`).MatchString(out) {
		t.Fatalf("service -o wide: exit %d\n%s%s", code, out, errOut)
	}

	// rollback takes the strategy of the update it undoes (wf here, not
	// cv as before) unless --strategy says otherwise.
	servertest.Eventually(t, 10*time.Second, "auth-4 to acknowledge its routing", func() bool {
		p, err := ts.Admin.DryRunUpdate(context.Background(), &coordinatorv1.StartUpdateRequest{Service: "auth-service",
			ToVersion: "v3", Strategy: coordinatorv1.Strategy_STRATEGY_WF})
		return err == nil && p.TargetAcknowledged == 1
	})
	code, out, errOut = ctl("update", "auth-service", "--to", "v3", "--strategy=wf", "--timeout=1m", "-w")
	m = regexp.MustCompile(`^Update (\S+) started: auth-service v1 -> v3 \(wf\)\.\n`).FindStringSubmatch(out)
	if code != exitOK || m == nil || !strings.Contains(out, ": DONE after") {
		t.Fatalf("update --to v3 --strategy=wf -w: exit %d\n%s%s", code, out, errOut)
	}
	toV3 := m[1]
	code, out, errOut = ctl("rollback", "auth-service", "-w")
	m = regexp.MustCompile(`(?m)^Update (\S+) started: auth-service v3 -> v1 \(wf\)\.$`).FindStringSubmatch(out)
	if code != exitOK || !strings.HasPrefix(out, "Rolling back auth-service from v3 back to v1 (undoing update "+toV3+") with wf.\n") ||
		m == nil || !strings.Contains(out, ": DONE after") {
		t.Fatalf("rollback -w of a wf update: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = ctl("rollback", "auth-service", "--strategy=cv", "--dry-run")
	if code != exitOK || !strings.HasPrefix(out, "A rollback would take auth-service from v1 back to v3 (undoing update "+m[1]+") with cv.\n") ||
		!strings.Contains(out, "auth-service v1 -> v3 (cv): would start now") {
		t.Fatalf("rollback --strategy=cv --dry-run: exit %d\n%s%s", code, out, errOut)
	}
}
