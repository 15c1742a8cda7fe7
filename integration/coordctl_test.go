package integration

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

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

	run := func(wantOK bool, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--server", ts.GRPCAddr()}, args...)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if (err == nil) != wantOK {
			t.Fatalf("coordctl %v: err=%v stdout=%s stderr=%s", args, err, out.String(), errb.String())
		}
		return out.String() + errb.String()
	}

	out := run(true, "freeness", "auth")
	for _, want := range []string{"t-1", "v1", "portal"} {
		if !strings.Contains(out, want) {
			t.Fatalf("coordctl freeness auth: missing %q in:\n%s", want, out)
		}
	}
	var f pb.Freeness
	if err := protojson.Unmarshal([]byte(run(true, "freeness", "auth", "-o", "json")), &f); err != nil {
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
