package embedetcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coordinator/coordinator/security/testca"
	"github.com/coordinator/coordinator/security/tlsfiles"
)

// A single member opens no client listener unless asked: its process
// calls it in process, and nothing else can reach it.
func TestSingleMemberServesNoClients(t *testing.T) {
	s := start(t, Config{DataDir: t.TempDir()})
	defer s.Close()
	if eps, urls := s.Endpoints(), s.ClientURLs(); len(eps) != 0 || len(urls) != 0 {
		t.Fatalf("Endpoints() = %v, ClientURLs() = %v; want none", eps, urls)
	}
	if n := len(s.Etcd().Clients); n != 0 {
		t.Fatalf("%d client listeners, want none", n)
	}
	if ec := s.Etcd().Config(); len(ec.ListenClientUrls) != 0 || len(ec.AdvertiseClientUrls) != 0 || len(ec.ListenClientHttpUrls) != 0 {
		t.Fatalf("etcd listens for clients at %v %v, advertises %v", ec.ListenClientUrls, ec.ListenClientHttpUrls, ec.AdvertiseClientUrls)
	}

	cli := s.LocalClient()
	defer cli.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	mustGet(ctx, t, cli, "k", "v")
	ml, err := cli.MemberList(ctx)
	if err != nil || len(ml.Members) != 1 {
		t.Fatalf("MemberList = %v, %v", ml, err)
	}
	if m := ml.Members[0]; m.Name != DefaultName || len(m.ClientURLs) != 0 {
		t.Fatalf("member %q publishes client URLs %v, want %q with none", m.Name, m.ClientURLs, DefaultName)
	}
	if err := s.HandOffRaftLeadership(ctx); err != nil {
		t.Fatalf("hand-off on a single member: %v", err)
	}
}

// tlsClient is an etcd client of endpoints over TLS configured by files.
func tlsClient(t *testing.T, files tlsfiles.Files, endpoints ...string) *clientv3.Client {
	t.Helper()
	r, err := tlsfiles.New(files)
	if err != nil {
		t.Fatal(err)
	}
	return tlsClientConfig(t, r.ClientConfig(""), endpoints...)
}

func tlsClientConfig(t *testing.T, tlsc *tls.Config, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, TLS: tlsc, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("client for %v: %v", endpoints, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// refused checks that cli's Put fails: a handshake that can never pass,
// so the bounded wait is not a race.
func refused(t *testing.T, what string, cli *clientv3.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "intruder", what); err == nil {
		t.Fatalf("%s: Put succeeded, want it refused", what)
	} else {
		t.Logf("%s: refused: %v", what, err)
	}
}

// memberFiles issues member i's certificate (both peer and client use,
// loopback names) into dir.
func memberFiles(t *testing.T, ca *testca.CA, dir string, i int) tlsfiles.Files {
	f := ca.WriteFiles(t, dir, fmt.Sprintf("n%d", i+1), testca.Leaf{CommonName: fmt.Sprintf("n%d", i+1)})
	return tlsfiles.Files(f)
}

// A cluster with peer and client TLS forms, serves TLS clients that
// present a certificate of its CA and no others, and hands Raft
// leadership off (which dials the other members' client URLs over TLS).
func TestClusterTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "etcd CA")
	files := make([]tlsfiles.Files, 3)
	for i := range files {
		files[i] = memberFiles(t, ca, dir, i)
	}
	member := func(i int) tlsfiles.Files { return files[i] }
	c := startClusterWith(t, clusterOpts{peerTLS: member, clientTLS: member})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	for i, s := range c.servers {
		for _, u := range append(s.ClientURLs(), s.PeerURLs()...) {
			if !strings.HasPrefix(u, "https://127.0.0.1:") {
				t.Errorf("n%d: URL %s, want https", i+1, u)
			}
		}
	}
	client := tlsfiles.Files(ca.WriteFiles(t, dir, "client", testca.Leaf{CommonName: "client", ClientOnly: true}))
	c1, c3 := tlsClient(t, client, c.servers[0].ClientURLs()...), tlsClient(t, client, c.servers[2].ClientURLs()...)
	if _, err := c1.Put(ctx, "x", "y"); err != nil {
		t.Fatalf("Put via n1: %v", err)
	}
	mustGet(ctx, t, c3, "x", "y")
	ml, err := c3.MemberList(ctx)
	if err != nil || len(ml.Members) != 3 {
		t.Fatalf("MemberList = %v, %v; want 3 members", ml, err)
	}
	for _, m := range ml.Members {
		if len(m.ClientURLs) != 1 || !strings.HasPrefix(m.ClientURLs[0], "https://") ||
			len(m.PeerURLs) != 1 || !strings.HasPrefix(m.PeerURLs[0], "https://") {
			t.Errorf("member %s: client %v peer %v, want https", m.Name, m.ClientURLs, m.PeerURLs)
		}
	}

	// Clients the member cannot verify are refused: no certificate, a
	// certificate of another CA (the server itself is trusted), plain
	// http.
	eps := c.servers[0].ClientURLs()
	refused(t, "no client certificate", tlsClient(t, tlsfiles.Files{CA: client.CA}, eps...))
	other := testca.New(t, "another CA")
	stranger := other.WriteFiles(t, t.TempDir(), "stranger", testca.Leaf{CommonName: "client", ClientOnly: true})
	refused(t, "certificate of another CA", tlsClient(t, tlsfiles.Files{Cert: stranger.Cert, Key: stranger.Key, CA: client.CA}, eps...))
	refused(t, "plain http", clientFor(t, strings.Replace(eps[0], "https://", "http://", 1)))

	// The hand-off asks the other members for their status over TLS: with
	// a plain client it would find no transferee.
	lead := c.raftLeader(t)
	if err := c.servers[lead].HandOffRaftLeadership(ctx); err != nil {
		t.Fatalf("hand-off on the leader: %v", err)
	}
	eventually(t, 10*time.Second, "another Raft leader", func() bool { return c.raftLeader(t) != lead })
}

// A member whose peer certificate comes from another CA cannot join: the
// two others form the cluster without it, and it never becomes ready.
func TestClusterTLSRefusesAMemberOfAnotherCA(t *testing.T) {
	const attempts = 3
	for attempt := 1; ; attempt++ {
		err := tryRefuseMemberOfAnotherCA(t)
		if err == nil {
			return
		}
		if attempt < attempts && errors.Is(err, syscall.EADDRINUSE) {
			t.Logf("attempt %d: %v; picking new ports", attempt, err)
			continue
		}
		t.Fatal(err)
	}
}

func tryRefuseMemberOfAnotherCA(t *testing.T) error {
	dir := t.TempDir()
	ca := testca.New(t, "etcd CA")
	files := make([]tlsfiles.Files, 3)
	for i := range 2 {
		files[i] = memberFiles(t, ca, dir, i)
	}
	other := testca.New(t, "another CA")
	files[2] = memberFiles(t, other, filepath.Join(t.TempDir()), 2)
	member := func(i int) tlsfiles.Files { return files[i] }
	c := startClusterWith(t, clusterOpts{peerTLS: member, clientTLS: member, only: []int{0, 1}})

	// Its handshakes fail both ways (it trusts another CA, and its
	// certificate is not of theirs) for as long as it tries: a bounded
	// start cannot succeed.
	sctx, scancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer scancel()
	s, err := Start(sctx, c.config(2))
	if err == nil {
		s.Close()
		return errors.New("the member of another CA started")
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	if !errors.Is(err, ErrNotReady) {
		return fmt.Errorf("Start of the member of another CA = %v, want ErrNotReady", err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cli := tlsClient(t, files[0], c.servers[0].ClientURLs()...)
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		return fmt.Errorf("put with two of three members: %w", err)
	}
	ml, err := cli.MemberList(ctx)
	if err != nil || len(ml.Members) != 3 {
		return fmt.Errorf("MemberList = %v, %w; want 3 members", ml, err)
	}
	for _, m := range ml.Members {
		if strings.Contains(m.PeerURLs[0], c.servers[0].PeerURLs()[0]) || strings.Contains(m.PeerURLs[0], c.servers[1].PeerURLs()[0]) {
			continue
		}
		if len(m.ClientURLs) != 0 {
			return fmt.Errorf("the member of another CA published itself: %q at %v", m.Name, m.ClientURLs)
		}
	}
	return nil
}
