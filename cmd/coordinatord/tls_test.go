package main

import (
	"bytes"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/coordinator/coordinator/security/testca"
)

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7400": true, "127.0.0.2:1": true, "[::1]:7400": true, "localhost:7400": true, "LOCALHOST:1": true,
		":7400": false, "0.0.0.0:7400": false, "[::]:7400": false, "10.0.0.5:7400": false, "coordinator.example:7400": false,
	} {
		if got := isLoopback(addr); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// Beyond loopback without a certificate coordinatord refuses to start
// (exit 2, naming the flag and the fix) unless --insecure; on loopback no
// flag is needed. Each case that passes the TLS check is stopped by a bad
// --leader-ttl, checked after it, before anything starts.
func TestPlaintextBeyondLoopbackIsRefused(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "ca")
	f := ca.WriteFiles(t, dir, "server", testca.Leaf{})
	const refused = "listens beyond loopback without TLS: give --tls-cert and --tls-key"
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"--grpc-addr", "0.0.0.0:7400"}, want: "--grpc-addr 0.0.0.0:7400 " + refused},
		{args: []string{"--http-addr", ":7401"}, want: "--http-addr :7401 " + refused},
		{args: []string{"--grpc-addr", "[::]:7400"}, want: "--grpc-addr [::]:7400 " + refused},
		{args: []string{"--grpc-addr", "coordinator.example:7400"}, want: refused},
		{env: map[string]string{"COORDINATORD_GRPC_ADDR": "10.1.2.3:7400"}, want: "(set by $COORDINATORD_GRPC_ADDR)"},
		{args: []string{"--grpc-addr", "0.0.0.0:7400"}, want: "or --insecure to serve plaintext anyway"},
		// Passing the check: stopped by --leader-ttl.
		{args: []string{"--grpc-addr", "0.0.0.0:0", "--insecure"}, want: "--leader-ttl"},
		{args: []string{"--grpc-addr", "0.0.0.0:0"}, env: map[string]string{"COORDINATORD_INSECURE": "true"}, want: "--leader-ttl"},
		{args: []string{"--grpc-addr", "0.0.0.0:0", "--http-addr", "0.0.0.0:0", "--tls-cert", f.Cert, "--tls-key", f.Key, "--client-ca", f.CA}, want: "--leader-ttl"},
		{args: []string{}, want: "--leader-ttl"},
		// Inconsistent TLS flags.
		{args: []string{"--tls-cert", f.Cert}, want: "--tls-cert needs --tls-key"},
		{args: []string{"--tls-key", f.Key}, want: "--tls-key needs --tls-cert"},
		{args: []string{"--client-ca", f.CA}, want: "--client-ca needs --tls-cert and --tls-key"},
		{args: []string{"--tls-cert", f.Cert, "--tls-key", f.Key, "--trust-domain", "x.example"}, want: "they need --client-ca"},
		{args: []string{"--tls-cert", f.Cert, "--tls-key", f.Key, "--client-ca", f.CA, "--tls-identity-from", "dns"}, want: `--tls-identity-from "dns": want spiffe or cn`},
		{args: []string{"--tls-cert", filepath.Join(dir, "missing.crt"), "--tls-key", f.Key}, want: "missing.crt"},
		{args: []string{"--tls-cert", f.Key, "--tls-key", f.Cert}, want: "--tls-cert, --tls-key, --client-ca: tlsfiles:"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v) // restored when the subtest ends
			}
			args := append(slices.Clone(tc.args), "--leader-ttl", "1s")
			var stderr bytes.Buffer
			code := run(args, io.Discard, &stderr)
			if code != 2 || !strings.HasPrefix(stderr.String(), "coordinatord: ") || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("%q (env %v): exit %d, stderr %q; want exit 2 and %q", tc.args, tc.env, code, stderr.String(), tc.want)
			}
			if tc.want == "--leader-ttl" && strings.Contains(stderr.String(), "TLS") {
				t.Errorf("%q: refused for TLS: %s", tc.args, stderr.String())
			}
		})
	}
}

func TestHelpListsTLSFlags(t *testing.T) {
	var stdout bytes.Buffer
	if code := run([]string{"--help"}, &stdout, io.Discard); code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	for _, f := range []string{"--tls-cert", "--tls-key", "--client-ca", "--tls-identity-from", "--trust-domain", "--health-addr", "--insecure"} {
		if !strings.Contains(stdout.String(), f) {
			t.Errorf("--help does not list %s", f)
		}
	}
}
