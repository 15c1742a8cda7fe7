package integration

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// TestCoordctl runs the coordctl binary against a real coordinator.
func TestCoordctl(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs coordctl")
	}
	bin := buildBinary(t, "cmd/coordctl")
	ts := servertest.Start(t, "")
	portal := ts.Sidecar("portal-1", "portal", "v1", "auth", "proc")
	ts.Sidecar("auth-1", "auth", "v1")
	servertest.Send(t, portal, simsidecar.Begin("t-1", 1), simsidecar.Call("t-1", 1, "auth", 2), simsidecar.Return("t-1", 2))

	runStatus := func(want int, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--server", ts.GRPCAddr()}, args...)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != want || (err != nil && code == 0) {
			t.Fatalf("coordctl %v: exit %d (err=%v), want %d; stdout=%s stderr=%s", args, code, err, want, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}
	run := func(wantOK bool, args ...string) string {
		t.Helper()
		if wantOK {
			return runStatus(0, args...)
		}
		return runStatus(1, args...)
	}

	// t-1 blocks auth: freeness answers, and exits 3 (not free).
	out := runStatus(3, "freeness", "auth")
	for _, want := range []string{"t-1", "v1", "portal"} {
		if !strings.Contains(out, want) {
			t.Fatalf("coordctl freeness auth: missing %q in:\n%s", want, out)
		}
	}
	var f pb.Freeness
	if err := protojson.Unmarshal([]byte(runStatus(3, "freeness", "auth", "-o", "json")), &f); err != nil {
		t.Fatal(err)
	}
	if f.Free || f.Blocking != 1 || f.Blockers[0].TxnId != "t-1" {
		t.Fatalf("coordctl freeness -o json = %v", &f)
	}
	if out := run(true, "graph", "--dot"); !strings.HasPrefix(strings.TrimSpace(out), "digraph") ||
		!strings.Contains(out, `"portal" -> "auth"`) {
		t.Fatalf("coordctl graph --dot:\n%s", out)
	}
	if out := run(true, "sessions"); !strings.Contains(out, "portal-1") || !strings.Contains(out, "auth-1") {
		t.Fatalf("coordctl sessions:\n%s", out)
	}
	if out := run(true, "txns", "--service", "auth"); !strings.Contains(out, "t-1") {
		t.Fatalf("coordctl txns:\n%s", out)
	}
	if out := run(false, "freeness", "nosuch"); !strings.Contains(out, `unknown service "nosuch"`) {
		t.Fatalf("coordctl freeness nosuch: want the server's message, got:\n%s", out)
	}
}

// TestCoordctlUpdate runs coordctl update --watch, status and abort against
// a live coordinator with simulated sidecars.
func TestCoordctlUpdate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs coordctl")
	}
	bin := buildBinary(t, "cmd/coordctl")
	w := chainWorld(t)
	ctl := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--server", w.ts.GRPCAddr()}, args...)...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	out, code := ctl("update", "s1", "--to", "v2", "--strategy=cv", "--watch")
	if code != 0 || !strings.Contains(out, "phase=") || !strings.Contains(out, ": DONE after") {
		t.Fatalf("update --watch: exit %d\n%s", code, out)
	}
	if out, code = ctl("status"); code != 0 || !strings.Contains(out, "DONE") || !strings.Contains(out, "v1 -> v2") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}

	// A WF update of s2 held up by a paused transaction, aborted by an operator:
	// the watching coordctl exits 1 with the reason.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w.add("s2", "v2")
	gate := make(chan struct{})
	paused := w.paused(ctx, "s2", 1, gate)
	defer func() { close(gate); _ = paused() }()
	u := w.startUpdate("s2", "v2", pb.Strategy_STRATEGY_WF, 0, 0)
	w.waitPhase(u.Id, pb.Phase_PHASE_WAITING)
	watch := exec.Command(bin, "--server", w.ts.GRPCAddr(), "status", u.Id, "--watch")
	var wout bytes.Buffer
	watch.Stdout, watch.Stderr = &wout, &wout
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	if out, code = ctl("abort", u.Id, "--reason", "operator says no"); code != 0 || !strings.Contains(out, "ABORTED") {
		t.Fatalf("abort: exit %d\n%s", code, out)
	}
	err := watch.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(wout.String(), "ABORTED after") ||
		!strings.Contains(wout.String(), "operator says no") {
		t.Fatalf("status --watch of an aborted update: %v\n%s", err, wout.String())
	}
	if out, code = ctl("abort", u.Id); code != 1 || !strings.Contains(out, "ABORTED already") {
		t.Fatalf("second abort: exit %d\n%s", code, out)
	}
}

// TestCoordctlOperatorExitStatuses runs the coordctl binary's operator
// commands against a live coordinator and checks their exit statuses as a
// script sees them: 0 done, 1 a failed call or a refused update, 2 a bad
// command line (update without --to and no single other version), 3 a
// service that is not free.
func TestCoordctlOperatorExitStatuses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs coordctl")
	}
	bin := buildBinary(t, "cmd/coordctl")
	ts := servertest.Start(t, "")
	portal := ts.LongSidecar("portal-1", "portal", "v1", "auth-service")
	ts.LongSidecar("auth-1", "auth-service", "v1")
	ctl := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--server", ts.GRPCAddr()}, args...)...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	expect := func(want int, says string, args ...string) string {
		t.Helper()
		out, code := ctl(args...)
		if code != want || !strings.Contains(out, says) {
			t.Fatalf("coordctl %s: exit %d, want %d saying %q:\n%s", strings.Join(args, " "), code, want, says, out)
		}
		return out
	}

	expect(2, "registered: v1 (default, 1 instance)", "update", "auth-service", "--strategy=cv")
	ts.LongSidecar("auth-2", "auth-service", "v2")
	ts.LongSidecar("auth-3", "auth-service", "v3")
	expect(2, "has 2 registered versions other than its default v1", "update", "auth-service", "--strategy=cv")
	expect(1, `unknown service "nosuch"`, "service", "nosuch")
	expect(0, "auth-service", "services")
	expect(0, "Default:      v1", "service", "auth-service")
	expect(0, "No updates of auth-service.", "history", "auth-service")
	expect(1, `unknown service "nosuch"`, "history", "nosuch")
	expect(1, "nothing to roll back", "rollback", "auth-service")

	txn := servertest.TxnID(1)
	servertest.Send(t, portal, simsidecar.Begin(txn, 1), simsidecar.Call(txn, 1, "auth-service", 2), simsidecar.Return(txn, 2))
	expect(3, "Free:      no", "freeness", "auth-service")
	expect(3, "still not free", "freeness", "auth-service", "--wait", "--wait-timeout", "200ms")
	expect(0, "would start now", "update", "auth-service", "--to", "v2", "--strategy=bf", "--dry-run")
	expect(1, "the update would be refused", "update", "auth-service", "--to", "v9", "--strategy=bf", "--dry-run")
	servertest.Send(t, portal, simsidecar.End(txn))
	expect(0, "Free:      yes", "freeness", "auth-service")

	out := expect(0, ": DONE after", "update", "auth-service", "--to", "v2", "--strategy=wf", "-w", "--watch-timeout", "1m")
	if !strings.HasPrefix(out, "Update ") {
		t.Fatalf("update -w does not print the id first:\n%s", out)
	}
	expect(0, "auth-service v2 -> v1 (wf): would start now", "rollback", "auth-service", "--dry-run")
	expect(0, "Rolling back auth-service from v2 back to v1", "rollback", "auth-service", "--strategy=cv", "-w")
	out = expect(0, "v2 -> v1", "history", "auth-service")
	if !strings.Contains(out, "cv") || !strings.Contains(out, "wf") || strings.Count(out, "DONE") != 2 {
		t.Fatalf("history after an update and its rollback:\n%s", out)
	}
}
