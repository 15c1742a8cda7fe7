package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/adminauth"
)

// TestWebViewLogin: with a token file, the web view's first calls answer
// 401 and it shows the token form; a viewer's token buys a session cookie
// the page cannot read (HttpOnly), the page draws, and the actions a
// viewer may not take (Abort) are disabled with a note that says why.
func TestWebViewLogin(t *testing.T) {
	if testing.Short() {
		t.Skip("runs headless Chromium")
	}
	bin := findChromium(t)
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	viewer, _ := adminauth.NewToken()
	operator, _ := adminauth.NewToken()
	file := fmt.Sprintf("tokens:\n- {name: vera, role: viewer, sha256: %s}\n- {name: otto, role: operator, sha256: %s}\n",
		adminauth.HashToken(viewer), adminauth.HashToken(operator))
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := servertest.Start(t, "", func(cfg *server.Config) { cfg.AdminAuth.TokenFile = path })
	portal := ts.LongSidecar("portal-1", "portal", "v1", "auth-service")
	ts.LongSidecar("auth-1", "auth-service", "v1")
	ts.LongSidecar("auth-2", "auth-service", "v2")
	t1 := servertest.TxnID(1)
	servertest.Send(t, portal, simsidecar.Begin(t1, 1), simsidecar.Call(t1, 1, "auth-service", 2), simsidecar.Return(t1, 2))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	octx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+operator)
	st, err := ts.Admin.StartUpdate(octx, &pb.StartUpdateRequest{Service: "auth-service", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_WF})
	if err != nil {
		t.Fatal(err)
	}

	shots := os.Getenv("COORDINATOR_WEBUI_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	page := startChromium(t, bin, "http://"+ts.HTTPAddr()+"/ui/")
	page.waitFor(30*time.Second, "the token form", `!document.getElementById("login").hidden`)
	page.screenshot(shots, "login")
	page.mustEval(fmt.Sprintf(`document.getElementById("login-token").value = %q; document.getElementById("login").requestSubmit(); true`, viewer), nil)
	page.waitFor(30*time.Second, "the page drawn as vera",
		`document.body.dataset.snapshots >= 1 && document.getElementById("whoami").textContent.includes("vera (viewer)")`)
	abort := fmt.Sprintf(`document.querySelector('button[data-abort=%q]')`, st.GetId())
	page.waitFor(30*time.Second, "the Abort button, disabled", `(b => !!b && b.disabled)(`+abort+`)`)
	page.screenshot(shots, "viewer")
	var state struct {
		Note, Cookie string
		Hidden       bool
	}
	page.mustEval(`({Note: document.getElementById("role-note").textContent, Hidden: document.getElementById("role-note").hidden, Cookie: document.cookie})`, &state)
	if state.Hidden || state.Cookie != "" {
		t.Errorf("role note hidden %v, document.cookie %q (want the note shown and the cookie unreadable)", state.Hidden, state.Cookie)
	}
	if want := "need the operator role"; !strings.Contains(state.Note, want) {
		t.Errorf("role note %q lacks %q", state.Note, want)
	}
}
