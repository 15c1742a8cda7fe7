package server_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/testca"
	"github.com/coordinator/coordinator/security/tlsfiles"
	"github.com/coordinator/coordinator/storage/embedetcd"
)

// Three replicas, each on its member of an embedded etcd cluster with peer
// and client TLS: the cluster forms, each replica's own client (which
// must present a certificate to its member) reads and writes, one leads,
// and the cluster view reaches every member over TLS.
func TestEmbeddedClusterOverTLS(t *testing.T) {
	ca := testca.New(t, "etcd CA")
	dir := t.TempDir()
	var replicas []*server.Server
	for attempt := 1; ; attempt++ {
		var err error
		replicas, err = startTLSCluster(t, ca, dir)
		if err == nil {
			break
		}
		if attempt < 3 && errors.Is(err, syscall.EADDRINUSE) {
			t.Logf("attempt %d: %v; picking new ports", attempt, err)
			continue
		}
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	leader, err := replicas[0].WaitLeader(ctx)
	if err != nil {
		t.Fatalf("no leader: %v", err)
	}
	conn, err := grpc.NewClient(replicas[0].GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The replica that starts leading hands Raft leadership off its own
	// member (keepRaftElsewhere), and etcd drops proposals while a
	// transfer runs (silently for one a follower forwarded, which then
	// times out after 7 s): wait for the cluster to settle (three healthy
	// members, Raft led by another member than the leading replica's),
	// as an operator waits for a new cluster to be ready, then write once.
	var view *pb.Cluster
	servertest.Eventually(t, 20*time.Second, "the cluster to settle", func() bool {
		view, err = pb.NewAdminServiceClient(conn).GetCluster(ctx, &pb.GetClusterRequest{})
		if err != nil || len(view.GetMembers()) != 3 || view.GetLeader().GetName() == "" {
			return false
		}
		raft := ""
		for _, m := range view.GetMembers() {
			if !m.GetHealthy() {
				return false
			}
			if m.GetRaftLeader() {
				raft = m.GetName()
			}
		}
		return raft != "" && raft != view.GetLeader().GetName()
	})
	for i, r := range replicas {
		eps := r.Client().Endpoints()
		if len(eps) == 0 || !strings.HasPrefix(eps[0], "https://") {
			t.Fatalf("replica n%d's etcd client endpoints %v, want https", i+1, eps)
		}
		key := fmt.Sprintf("/tls-test/n%d", i+1)
		if _, err := r.Client().Put(ctx, key, "v"); err != nil {
			t.Fatalf("replica n%d's client: Put: %v", i+1, err)
		}
		if resp, err := replicas[(i+1)%3].Client().Get(ctx, key); err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("replica n%d's client: Get %s = %v, %v", (i+1)%3+1, key, resp, err)
		}
	}
	if view.GetLeader().GetName() != leader.GetName() {
		t.Errorf("cluster view leader %v, want %v", view.GetLeader(), leader)
	}
	for _, m := range view.GetMembers() {
		if len(m.GetClientUrls()) != 1 || !strings.HasPrefix(m.GetClientUrls()[0], "https://") ||
			len(m.GetPeerUrls()) != 1 || !strings.HasPrefix(m.GetPeerUrls()[0], "https://") {
			t.Errorf("member %s: client %v peer %v, want https", m.GetName(), m.GetClientUrls(), m.GetPeerUrls())
		}
	}
}

// startTLSCluster starts three replicas on an embedded cluster with TLS on
// free loopback ports, closed when t ends.
func startTLSCluster(t *testing.T, ca *testca.CA, dir string) ([]*server.Server, error) {
	var ls []net.Listener
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	var parts []string
	for i, l := range ls {
		parts = append(parts, fmt.Sprintf("n%d=https://%s", i+1, l.Addr()))
		l.Close()
	}
	initial := strings.Join(parts, ",")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	replicas := make([]*server.Server, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range replicas {
		name := fmt.Sprintf("n%d", i+1)
		files := tlsfiles.Files(ca.WriteFiles(t, dir, name, testca.Leaf{CommonName: name}))
		cfg := server.Config{
			GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: filepath.Join(t.TempDir(), name),
			Name: name, InitialCluster: initial, EtcdPeerTLS: files, EtcdClientTLS: files,
			Logger: slog.New(slog.DiscardHandler),
		}
		wg.Go(func() {
			if replicas[i], errs[i] = server.Start(ctx, cfg); errs[i] != nil {
				cancel() // the others would wait for this member until the deadline
			}
		})
	}
	wg.Wait()
	stop := func() {
		var wg sync.WaitGroup
		for _, r := range replicas {
			if r != nil {
				wg.Go(func() {
					sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer scancel()
					_ = r.Close(sctx)
				})
			}
		}
		wg.Wait()
	}
	if err := errors.Join(errs...); err != nil {
		stop()
		return nil, err
	}
	t.Cleanup(stop)
	return replicas, nil
}

// A replica on an external etcd with client TLS and auth enabled: with
// the CA, its client certificate and the user's password it leads.
func TestExternalEtcdOverTLSWithAuth(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "external etcd CA")
	srvFiles := tlsfiles.Files(ca.WriteFiles(t, dir, "etcd", testca.Leaf{CommonName: "etcd"}))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	etcd, err := embedetcd.Start(ctx, embedetcd.Config{DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0", ClientTLS: srvFiles,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	admin := etcd.LocalClient()
	for _, step := range []func() error{
		func() error { _, err := admin.RoleAdd(ctx, "root"); return err },
		func() error { _, err := admin.UserAdd(ctx, "root", "pw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("auth setup: %v", err)
		}
	}
	admin.Close()

	client := tlsfiles.Files(ca.WriteFiles(t, dir, "replica", testca.Leaf{CommonName: "replica", ClientOnly: true}))
	r := servertest.Start(t, "", func(cfg *server.Config) {
		cfg.EtcdEndpoints = etcd.Endpoints()
		cfg.EtcdTLS, cfg.EtcdUsername, cfg.EtcdPassword = client, "root", "pw"
	})
	if r.Leader() == nil {
		t.Fatal("the only replica does not lead")
	}
	if _, err := r.Client().Put(ctx, "/tls-test/k", "v"); err != nil {
		t.Fatalf("Put: %v", err)
	}
}

// Settings of the other kind of etcd, or halves of a pair, are refused
// before anything starts.
func TestEtcdSecuritySettingsRefused(t *testing.T) {
	files := tlsfiles.Files{Cert: "c.crt", Key: "c.key", CA: "ca.crt"}
	for _, tc := range []struct {
		name string
		cfg  server.Config
	}{
		{"external TLS with the embedded etcd", server.Config{EtcdTLS: files}},
		{"a user with the embedded etcd", server.Config{EtcdUsername: "root", EtcdPassword: "pw"}},
		{"peer TLS with an external etcd", server.Config{EtcdEndpoints: []string{"https://127.0.0.1:1"}, EtcdPeerTLS: files}},
		{"a user without a password", server.Config{EtcdEndpoints: []string{"https://127.0.0.1:1"}, EtcdUsername: "root"}},
		{"TLS to an http endpoint", server.Config{EtcdEndpoints: []string{"http://127.0.0.1:1"}, EtcdTLS: tlsfiles.Files{CA: "ca.crt"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.DataDir, tc.cfg.GRPCAddr, tc.cfg.HTTPAddr = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
			s, err := server.Start(t.Context(), tc.cfg)
			if !errors.Is(err, server.ErrEtcdSecurity) {
				if s != nil {
					s.Close(t.Context())
				}
				t.Fatalf("Start = %v, want ErrEtcdSecurity", err)
			}
		})
	}
}
