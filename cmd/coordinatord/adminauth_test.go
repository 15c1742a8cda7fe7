package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A bad token file stops the start with a message that names the flag (or
// its variable), the file and what is wrong.
func TestAdminAuthFlagErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(bad, []byte("tokens: [{name: ci, role: admin, sha256: 00}]"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := run([]string{"--token-file", bad}, io.Discard, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "--token-file: adminauth: token file "+bad+": tokens[0] (ci): role \"admin\": want viewer or operator") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	t.Setenv("COORDINATORD_TOKEN_FILE", filepath.Join(dir, "missing.yaml"))
	stderr.Reset()
	if code := run(nil, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "no such file") ||
		!strings.Contains(stderr.String(), "$COORDINATORD_TOKEN_FILE") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	t.Setenv("COORDINATORD_TOKEN_FILE", "")
	stderr.Reset()
	if code := run([]string{"--admin-identities", bad}, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "needs client certificates") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}
