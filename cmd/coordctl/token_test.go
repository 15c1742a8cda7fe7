package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/adminauth"
)

// token create prints a token and its file entry; coordinatord takes the
// entry, and coordctl sends the token from --token or COORDCTL_TOKEN.
func TestTokenCreateAndUse(t *testing.T) {
	code, out, errOut := runCLI("token", "create", "--name", "ci", "--role", "operator")
	if code != exitOK || !strings.Contains(out, "- name: ci\n  role: operator\n  sha256: ") {
		t.Fatalf("token create: exit %d\n%s%s", code, out, errOut)
	}
	entry := out[strings.Index(out, "- name: ci"):]
	opTok := strings.TrimSpace(strings.Split(out, "\n")[2]) // the token, indented after a blank line
	if adminauth.HashToken(opTok) != strings.TrimSpace(strings.TrimPrefix(strings.Split(entry, "\n")[2], "  sha256:")) {
		t.Fatalf("the printed entry is not of the printed token:\n%s", out)
	}
	code, out, _ = runCLI("token", "create", "--name", "grafana", "--role", "viewer", "-o", "json")
	var viewer tokenJSON
	if err := json.Unmarshal([]byte(out), &viewer); code != exitOK || err != nil || viewer.Role != "viewer" {
		t.Fatalf("token create -o json: exit %d %v\n%s", code, err, out)
	}
	if viewer.SHA256 != adminauth.HashToken(viewer.Token) || len(viewer.Token) != 43 {
		t.Fatalf("token %q hashed as %s, want %s", viewer.Token, viewer.SHA256, adminauth.HashToken(viewer.Token))
	}
	for _, bad := range [][]string{{"--name", "x", "--role", "admin"}, {"--role", "viewer"}} {
		if code, _, errOut := runCLI(append([]string{"token", "create"}, bad...)...); code != exitUsage {
			t.Errorf("token create %q: exit %d, %s", bad, code, errOut)
		}
	}

	path := filepath.Join(t.TempDir(), "tokens.yaml")
	file := "tokens:\n" + entry + "- name: grafana\n  role: viewer\n  sha256: " + viewer.SHA256 + "\n"
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := servertest.Start(t, "", func(cfg *server.Config) { cfg.AdminAuth.TokenFile = path })
	addr := ts.GRPCAddr()

	t.Setenv(tokenEnv, "")
	code, out, errOut = runCLI("--server", addr, "cluster")
	if code != exitError || !strings.Contains(errOut, "set --token or COORDCTL_TOKEN") {
		t.Errorf("no token: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut = runCLI("--server", addr, "--token", viewer.Token, "cluster"); code != exitOK {
		t.Errorf("--token: exit %d\n%s%s", code, out, errOut)
	}
	t.Setenv(tokenEnv, viewer.Token)
	if code, out, errOut = runCLI("--server", addr, "sessions"); code != exitOK {
		t.Errorf("$%s: exit %d\n%s%s", tokenEnv, code, out, errOut)
	}
	code, out, errOut = runCLI("--server", addr, "abort", "no-such-update")
	if code != exitError || !strings.Contains(errOut, "AbortUpdate needs the operator role; grafana (via token) has the viewer role") {
		t.Errorf("viewer abort: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI("--server", addr, "--token", opTok, "abort", "no-such-update")
	if code != exitError || strings.Contains(errOut, "role") || strings.Contains(errOut, "token") {
		t.Errorf("operator abort of a missing update: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI("--server", addr, "--token", "wrong", "sessions")
	if code != exitError || !strings.Contains(errOut, "bearer token not recognised") {
		t.Errorf("--token wins over $%s: exit %d\n%s%s", tokenEnv, code, out, errOut)
	}
	// Streams (status --watch, update --watch) dial with it too.
	for tok, want := range map[string]codes.Code{opTok: codes.NotFound, "": codes.Unauthenticated} {
		c := &cli{opts: globalOptions{server: addr, timeout: 10 * time.Second, token: tok}}
		conn, err := c.dial()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := coordinatorv1.NewAdminServiceClient(conn).WatchUpdate(ctx, &coordinatorv1.WatchUpdateRequest{Id: "no-such-update"})
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != want {
			t.Errorf("WatchUpdate over dial() with token %q: %v, want %v", tok, err, want)
		}
		cancel()
		conn.Close()
	}
}
