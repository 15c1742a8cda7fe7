package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/security/testca"
	"github.com/coordinator/coordinator/security/tlsfiles"
)

// coordctl reaches a coordinator with TLS and client certificates: with
// --tls-ca it verifies the server; with --tls-cert/--tls-key its
// certificate's identity gets the role --admin-identities gives it; the
// COORDCTL_TLS_* variables do the same. Without the CA the handshake
// fails; with a certificate whose identity has no role the call is
// refused, saying so.
func TestTLSFlags(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "coordctl-test-ca")
	srv := ca.WriteFiles(t, dir, "server", testca.Leaf{CommonName: "coordinator", URIs: []string{"spiffe://test.example/ns/ops/sa/coordinator"}})
	op := ca.WriteFiles(t, dir, "oncall", testca.Leaf{URIs: []string{"spiffe://test.example/ns/ops/sa/oncall"}, ClientOnly: true})
	nobody := ca.WriteFiles(t, dir, "nobody", testca.Leaf{URIs: []string{"spiffe://test.example/ns/ops/sa/nobody"}, ClientOnly: true})
	roles := filepath.Join(dir, "admin-identities.yaml")
	if err := os.WriteFile(roles, []byte("identities:\n- identity: spiffe://test.example/ns/ops/sa/coordinator\n  role: operator\n"+
		"- identity: spiffe://test.example/ns/ops/sa/oncall\n  role: viewer\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := servertest.Start(t, "", func(cfg *server.Config) { cfg.AdminAuth.IdentityRolesFile = roles },
		servertest.WithTLS(tlsfiles.Files{Cert: srv.Cert, Key: srv.Key, CA: srv.CA}))
	addr := ts.GRPCAddr()

	for _, v := range []string{tlsCAEnv, tlsCertEnv, tlsKeyEnv, tlsNameEnv, tokenEnv} {
		t.Setenv(v, "")
	}
	// The harness's operator identity is the server certificate's.
	code, out, errOut := runCLI("--server", addr, "--tls-ca", srv.CA, "--tls-cert", srv.Cert, "--tls-key", srv.Key, "cluster")
	if code != exitOK || !strings.Contains(out, "LEADER") && !strings.Contains(out, "leader") {
		t.Fatalf("cluster over mTLS: exit %d\n%s%s", code, out, errOut)
	}
	// The same from the environment.
	t.Setenv(tlsCAEnv, srv.CA)
	t.Setenv(tlsCertEnv, srv.Cert)
	t.Setenv(tlsKeyEnv, srv.Key)
	if code, out, errOut := runCLI("--server", addr, "sessions"); code != exitOK {
		t.Fatalf("sessions with COORDCTL_TLS_*: exit %d\n%s%s", code, out, errOut)
	}
	// A viewer's certificate reads, and may not abort.
	if code, out, errOut := runCLI("--server", addr, "--tls-cert", op.Cert, "--tls-key", op.Key, "sessions"); code != exitOK {
		t.Fatalf("sessions as a viewer: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, errOut := runCLI("--server", addr, "--tls-cert", op.Cert, "--tls-key", op.Key, "abort", "some-update"); code != exitError ||
		!strings.Contains(errOut, "needs the operator role") {
		t.Fatalf("abort as a viewer: exit %d\n%s%s", code, out, errOut)
	}
	// A certificate whose identity has no admin role.
	if code, out, errOut := runCLI("--server", addr, "--tls-cert", nobody.Cert, "--tls-key", nobody.Key, "sessions"); code != exitError ||
		!strings.Contains(errOut, "needs the viewer role") || !strings.Contains(errOut, "spiffe://test.example/ns/ops/sa/nobody") {
		t.Fatalf("sessions as an identity without a role: exit %d\n%s%s", code, out, errOut)
	}
	// No CA: the server's certificate is not trusted (system roots).
	t.Setenv(tlsCAEnv, "")
	t.Setenv(tlsCertEnv, "")
	t.Setenv(tlsKeyEnv, "")
	if code, out, errOut := runCLI("--server", addr, "--tls-cert", nobody.Cert, "--tls-key", nobody.Key, "sessions"); code != exitError ||
		!strings.Contains(errOut, "certificate") {
		t.Fatalf("sessions without --tls-ca: exit %d\n%s%s", code, out, errOut)
	}
	// Plaintext against a TLS listener fails too.
	if code, _, _ := runCLI("--server", addr, "sessions"); code != exitError {
		t.Fatalf("plaintext coordctl against TLS: exit %d, want %d", code, exitError)
	}
	// A key without its certificate is a usage error.
	if code, _, errOut := runCLI("--server", addr, "--tls-ca", srv.CA, "--tls-key", nobody.Key, "sessions"); code != exitUsage ||
		!strings.Contains(errOut, "go together") {
		t.Fatalf("--tls-key alone: exit %d %s", code, errOut)
	}
}
