package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func TestRenderSelfPreservation(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	settings := &coordinatorv1.SelfPreservation{
		Window: durationpb.New(time.Minute), Ratio: 0.8, MinCount: 3, Grace: durationpb.New(2 * time.Minute),
	}
	active := &coordinatorv1.SelfPreservation{
		Active: true, Since: timestamppb.New(since), QueuedSessions: []string{"a-1", "p-1"},
		Window: settings.Window, Ratio: settings.Ratio, MinCount: settings.MinCount, Grace: settings.Grace,
		RecentExpiries: 2, Activations: 1,
	}
	for _, tc := range []struct {
		sp   *coordinatorv1.SelfPreservation
		want string
	}{
		{active, `Self-preservation:  ACTIVE since 2026-01-02T03:04:05Z (1m30s)
Queued sessions:    2 (a-1, p-1)
Recent expiries:    2 within the window
Activations:        1
Settings:           window 1m0s, ratio 0.8, min 3, grace 2m0s
`},
		{settings, `Self-preservation:  inactive
Queued sessions:    0
Recent expiries:    0 within the window
Activations:        0
Settings:           window 1m0s, ratio 0.8, min 3, grace 2m0s
`},
	} {
		var buf bytes.Buffer
		if err := renderSelfPreservation(&buf, tc.sp, since.Add(90*time.Second)); err != nil {
			t.Fatal(err)
		}
		if got := buf.String(); got != tc.want {
			t.Errorf("got\n%s\nwant\n%s", got, tc.want)
		}
	}
}

func TestSelfPreservationUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"selfpreservation", "on"}, `selfpreservation: unknown action "on": want status or off`},
		{[]string{"selfpreservation", "off", "now"}, `selfpreservation: unexpected argument "now"`},
	} {
		code, stdout, stderr := runCLI(tc.args...)
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want usage error %q", tc.args, code, stdout, stderr, tc.want)
		}
	}
}

// coordctl selfpreservation against a real coordinator where one expiry
// starts the mode (ratio 1, min 1): status shows it, off ends it and drops
// the queued session's transactions, a second off fails.
func TestSelfPreservationCommand(t *testing.T) {
	ts := servertest.Start(t, "", func(c *server.Config) {
		c.Coordinator.SelfPreservationRatio = 1
		c.Coordinator.SelfPreservationMin = 1
	})
	sc := ts.Sidecar("p-1", "portal", "v1") // not kept alive: its 2 s lease runs out
	servertest.Send(t, sc, simsidecar.Begin("T", 1))
	sc.Close()
	addr := ts.GRPCAddr()

	code, out, errOut := runCLI("--server", addr, "selfpreservation")
	if code != exitOK || !strings.Contains(out, "Self-preservation:  inactive") || !strings.Contains(out, "ratio 1, min 1, grace 2m0s") {
		t.Fatalf("status before the expiry: exit %d\n%s%s", code, out, errOut)
	}
	servertest.Eventually(t, 30*time.Second, "self-preservation to start", func() bool {
		_, out, _ := runCLI("--server", addr, "selfpreservation", "status")
		return strings.Contains(out, "ACTIVE since")
	})
	_, out, _ = runCLI("--server", addr, "sp")
	if !strings.Contains(out, "Queued sessions:    1 (p-1)") || !strings.Contains(out, "Activations:        1") {
		t.Fatalf("status while active:\n%s", out)
	}
	if n := ts.Txns("").Total; n != 1 {
		t.Fatalf("%d live transactions while p-1 is queued, want 1", n)
	}

	code, out, errOut = runCLI("--server", addr, "selfpreservation", "off")
	if code != exitOK || !strings.Contains(out, "Self-preservation ended") || !strings.Contains(out, "Self-preservation:  inactive") {
		t.Fatalf("off: exit %d\n%s%s", code, out, errOut)
	}
	if n := ts.Txns("").Total; n != 0 {
		t.Fatalf("%d live transactions after off, want 0", n)
	}
	code, out, errOut = runCLI("--server", addr, "selfpreservation", "off")
	if code != exitError || out != "" || !strings.Contains(errOut, "Error: coordinator: self-preservation is not active") {
		t.Fatalf("second off: exit %d, stdout %q, stderr %q; want exit 1 saying it is not active", code, out, errOut)
	}
	code, out, _ = runCLI("--server", addr, "-o", "json", "selfpreservation")
	if code != exitOK || !strings.Contains(out, `"active": false`) || !strings.Contains(out, `"activations": "1"`) {
		t.Fatalf("status -o json: exit %d\n%s", code, out)
	}
}
