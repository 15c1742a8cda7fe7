package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A policy file that does not parse stops coordinatord before it starts
// anything, with an error naming the flag and what is wrong.
func TestIdentityPolicyErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		path, want string
	}{
		{filepath.Join(dir, "missing.yaml"), "no such file"},
		{write("default.yaml", "default: everyone\n"), `default "everyone": want service-account or none`},
		{write("typo.yaml", "identities:\n- identity: a\n  servics: [a]\n"), `unknown field "servics"`},
		{write("star.yaml", "identities:\n- identity: spiffe://x/*/a\n  services: [a]\n"), "* may only end an identity"},
	} {
		var stderr bytes.Buffer
		if code := run([]string{"--identity-policy", tc.path}, io.Discard, &stderr); code != 2 {
			t.Errorf("%s: exit %d, want 2 (stderr %q)", tc.path, code, stderr.String())
		}
		if got := stderr.String(); !strings.Contains(got, "--identity-policy") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: stderr %q, want --identity-policy and %q", tc.path, got, tc.want)
		}
	}
}
