package storage

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator/coordinator/security/testca"
	"github.com/coordinator/coordinator/security/tlsfiles"
	"github.com/coordinator/coordinator/storage/embedetcd"
)

// startSecureEtcd starts an etcd that stands for an external one: client
// TLS with client certificates required, and auth enabled with a root
// user whose password is rootPassword. It returns its endpoints and the
// CA.
func startSecureEtcd(t *testing.T, rootPassword string) ([]string, *testca.CA) {
	t.Helper()
	dir := t.TempDir()
	ca := testca.New(t, "external etcd CA")
	srvFiles := tlsfiles.Files(ca.WriteFiles(t, dir, "etcd", testca.Leaf{CommonName: "etcd"}))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0", ClientTLS: srvFiles,
		Logger: slog.New(slog.DiscardHandler)}) // it logs every refusal
	if err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}
	t.Cleanup(srv.Close)

	// Auth is set up in process, as an operator would with etcdctl.
	admin := srv.LocalClient()
	defer admin.Close()
	for _, step := range []func() error{
		func() error { _, err := admin.RoleAdd(ctx, "root"); return err },
		func() error { _, err := admin.UserAdd(ctx, "root", rootPassword); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("auth setup: %v", err)
		}
	}
	return srv.Endpoints(), ca
}

// An external etcd with client TLS and auth: a client with the CA, a
// client certificate and the user's password works; without the password,
// with a wrong one, or without a client certificate it is refused.
func TestNewClientTLSAndAuth(t *testing.T) {
	const password = "correct horse"
	eps, ca := startSecureEtcd(t, password)
	// The certificate's CN is not an etcd user: etcd takes the CN as the
	// user of a request without a token, so this one may do nothing.
	files := tlsfiles.Files(ca.WriteFiles(t, t.TempDir(), "coordinator", testca.Leaf{CommonName: "coordinator", ClientOnly: true}))
	r, err := tlsfiles.New(files)
	if err != nil {
		t.Fatal(err)
	}
	newClient := func(opts ...ClientOption) *clientv3.Client {
		cli, err := NewClient(eps, testLogger(), opts...)
		if err != nil {
			t.Fatalf("NewClient: %v", err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	cli := newClient(WithTLS(r.ClientConfig("")), WithAuth("root", password))
	if _, err := cli.Put(ctx, "/secure/k", "v"); err != nil {
		t.Fatalf("Put with TLS and the password: %v", err)
	}
	resp, err := cli.Get(ctx, "/secure/k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("Get = %v, %v", resp, err)
	}

	// Refusals the server gives at once: authentication.
	for _, tc := range []struct {
		name string
		cli  *clientv3.Client
		want error
	}{
		{"no password", newClient(WithTLS(r.ClientConfig(""))), rpctypes.ErrPermissionDenied},
		{"wrong password", nil, rpctypes.ErrAuthFailed},
	} {
		if tc.cli == nil {
			// clientv3 authenticates while it connects: a wrong password
			// fails New, or the first request.
			c, err := NewClient(eps, testLogger(), WithTLS(r.ClientConfig("")), WithAuth("root", "wrong"))
			if err == nil {
				t.Cleanup(func() { c.Close() })
				_, err = c.Put(ctx, "/secure/k", "intruder")
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			}
			continue
		}
		if _, err := tc.cli.Put(ctx, "/secure/k", "intruder"); !errors.Is(err, tc.want) {
			t.Errorf("%s: Put = %v, want %v", tc.name, err, tc.want)
		}
	}

	// A client without a certificate never gets through the handshake.
	noCert, err := tlsfiles.New(tlsfiles.Files{CA: files.CA})
	if err != nil {
		t.Fatal(err)
	}
	// (With a user, clientv3 authenticates while it connects: New fails.)
	bare, err := NewClient(eps, testLogger(), WithTLS(noCert.ClientConfig("")), WithAuth("root", password))
	if err == nil {
		defer bare.Close()
		sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
		defer scancel()
		_, err = bare.Put(sctx, "/secure/k", "intruder")
	}
	if err == nil {
		t.Fatal("Put without a client certificate succeeded")
	}
	t.Logf("without a client certificate: %v", err)
	if resp, err := cli.Get(ctx, "/secure/k"); err != nil || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("after the refusals: Get = %v, %v; want v", resp, err)
	}
}
