package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/coordinator/coordinator/security/tlsfiles"
)

// testCluster is three members started in-process on loopback.
type testCluster struct {
	initial string
	dirs    []string
	servers []*Server
	opts    clusterOpts
	ports   []int        // peer ports, then client ports (used with opts.apart)
	proxies []*peerProxy // with opts.proxied: member i's advertised peer address
}

// clusterOpts varies a test cluster.
type clusterOpts struct {
	// peerTLS and clientTLS, when set, are member i's files (peer URLs,
	// and InitialCluster, are then https).
	peerTLS, clientTLS func(i int) tlsfiles.Files
	// only, when set, names the members started (by index); the others
	// are in InitialCluster, and the test starts them itself.
	only []int
	// apart, when set, advertises names and listens on addresses, as in
	// a Kubernetes pod: the peer and client URLs name "localhost", and
	// PeerListenAddr and ClientListenAddr bind 127.0.0.1 on those ports.
	apart bool
	// proxied, when set, puts a peerProxy in front of each member's peer
	// listener: the member listens on its own port (PeerListenAddr) and
	// advertises the proxy's, so everything sent to it goes through the
	// proxy, which a test can freeze.
	proxied bool
}

// startCluster starts a three-member cluster on free loopback ports. The
// peer ports must be known before any member starts, so they are picked
// (listen on :0, close) up front; when one was taken in between, the whole
// cluster starts again on new ports and new directories.
func startCluster(t *testing.T) *testCluster {
	t.Helper()
	return startClusterWith(t, clusterOpts{})
}

func startClusterWith(t *testing.T, opts clusterOpts) *testCluster {
	t.Helper()
	const attempts = 3
	for attempt := 1; ; attempt++ {
		c, err := tryStartCluster(t, opts)
		if err == nil {
			t.Cleanup(c.close)
			return c
		}
		if attempt < attempts && errors.Is(err, syscall.EADDRINUSE) {
			t.Logf("attempt %d: %v; picking new ports", attempt, err)
			continue
		}
		t.Fatalf("start cluster: %v", err)
	}
}

func tryStartCluster(t *testing.T, opts clusterOpts) (*testCluster, error) {
	ports, err := freePorts([]string{"127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1"})
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if opts.peerTLS != nil {
		scheme = "https"
	}
	host := "127.0.0.1"
	if opts.apart {
		host = "localhost"
	}
	var (
		parts   []string
		proxies []*peerProxy
	)
	for i, p := range ports[:3] {
		if opts.proxied {
			px, err := newPeerProxy(fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				return nil, err
			}
			t.Cleanup(px.close)
			proxies = append(proxies, px)
			p = px.port()
		}
		parts = append(parts, fmt.Sprintf("n%d=%s://%s:%d", i+1, scheme, host, p))
	}
	base := t.TempDir()
	c := &testCluster{initial: strings.Join(parts, ","), servers: make([]*Server, 3), opts: opts, ports: ports, proxies: proxies}
	for i := range 3 {
		c.dirs = append(c.dirs, filepath.Join(base, fmt.Sprintf("n%d", i+1)))
	}

	// One member failing (a port taken) stops the others from waiting for
	// it until the deadline.
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	errs := make([]error, 3)
	var wg sync.WaitGroup
	begin := time.Now()
	for i := range c.servers {
		if opts.only != nil && !slices.Contains(opts.only, i) {
			continue
		}
		wg.Go(func() {
			c.servers[i], errs[i] = Start(ctx, c.config(i))
			if errs[i] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.close()
		return nil, err
	}
	t.Logf("cluster %s ready in %v", c.initial, time.Since(begin).Round(time.Millisecond))
	return c, nil
}

func (c *testCluster) config(i int) Config {
	cfg := Config{Name: fmt.Sprintf("n%d", i+1), DataDir: c.dirs[i], InitialCluster: c.initial}
	if c.opts.peerTLS != nil {
		cfg.PeerTLS = c.opts.peerTLS(i)
	}
	if c.opts.clientTLS != nil {
		cfg.ClientTLS = c.opts.clientTLS(i)
	}
	if c.opts.apart {
		cfg.PeerListenAddr = fmt.Sprintf("127.0.0.1:%d", c.ports[i])
		cfg.ClientAddr = fmt.Sprintf("localhost:%d", c.ports[3+i])
		cfg.ClientListenAddr = fmt.Sprintf("127.0.0.1:%d", c.ports[3+i])
	}
	if c.opts.proxied {
		cfg.PeerListenAddr = fmt.Sprintf("127.0.0.1:%d", c.ports[i])
	}
	return cfg
}

// close stops every member still running. Stopped together, a leader
// would wait etcd's request timeout to hand leadership to a member that is
// going too: skip the hand-over. Each Close still waits up to 1 s for peer
// connections.
func (c *testCluster) close() {
	var wg sync.WaitGroup
	for _, s := range c.servers {
		if s != nil {
			wg.Go(func() {
				s.Etcd().Server.HardStop()
				s.Close()
			})
		}
	}
	wg.Wait()
}

// raftLeader returns the index of the member that leads raft, as its own
// server says, polling until one does.
func (c *testCluster) raftLeader(t *testing.T) int {
	t.Helper()
	var i int
	eventually(t, 10*time.Second, "a raft leader", func() bool {
		for i = range c.servers {
			if c.servers[i] == nil {
				continue
			}
			srv := c.servers[i].Etcd().Server
			if srv.Leader() == srv.MemberID() {
				return true
			}
		}
		return false
	})
	return i
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func clientFor(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("client for %v: %v", endpoints, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func mustGet(ctx context.Context, t *testing.T, cli *clientv3.Client, key, want string, opts ...clientv3.OpOption) {
	t.Helper()
	resp, err := cli.Get(ctx, key, opts...)
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != want {
		t.Fatalf("Get(%q) = %v, %v; want %q", key, resp, err, want)
	}
}

func TestThreeMemberCluster(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	// Each member's Endpoints come to name the three members, its own first.
	for i, s := range c.servers {
		eventually(t, 10*time.Second, fmt.Sprintf("3 endpoints from n%d", i+1), func() bool {
			return len(s.Endpoints()) == 3
		})
		eps := s.Endpoints()
		if eps[0] != s.endpoints[0] {
			t.Errorf("n%d: Endpoints() = %v, want its own %s first", i+1, eps, s.endpoints[0])
		}
		for _, o := range c.servers {
			if !slices.Contains(eps, o.endpoints[0]) {
				t.Errorf("n%d: Endpoints() = %v, missing %s", i+1, eps, o.endpoints[0])
			}
		}
	}

	c1, c3 := clientFor(t, c.servers[0].endpoints...), clientFor(t, c.servers[2].endpoints...)
	if _, err := c1.Put(ctx, "x", "y"); err != nil {
		t.Fatalf("Put via n1: %v", err)
	}
	mustGet(ctx, t, c3, "x", "y") // linearizable: goes through the leader
	ml, err := c3.MemberList(ctx)
	if err != nil || len(ml.Members) != 3 {
		t.Fatalf("MemberList = %v, %v; want 3 members", ml, err)
	}
	for _, m := range ml.Members {
		if len(m.ClientURLs) != 1 || len(m.PeerURLs) != 1 || !strings.Contains(c.initial, m.Name+"="+m.PeerURLs[0]) {
			t.Errorf("member %s: client %v peer %v, want one each, peer as in %s", m.Name, m.ClientURLs, m.PeerURLs, c.initial)
		}
	}
}

// A cluster member keeps etcd's raft timing, 100 ms ticks and a 1 s
// election timeout, which a loaded machine does not trip (a lone member's
// shorter timeout could not cause a spurious election; theirs could).
func TestRaftTimingOfAClusterMember(t *testing.T) {
	c := startCluster(t)
	for i, s := range c.servers {
		cfg := s.Etcd().Server.Cfg
		if cfg.TickMs != 100 || cfg.ElectionTicks != 10 {
			t.Errorf("n%d: tick %d ms, election %d ticks; want 100 ms and 10", i+1, cfg.TickMs, cfg.ElectionTicks)
		}
	}
}

// A member that stops leaves two that keep serving; started again on its
// data dir it rejoins as the same member and catches up.
func TestClusterMemberStopAndRejoin(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()

	// Stop the raft leader: the others must elect a new one.
	down := c.raftLeader(t)
	up := []int{(down + 1) % 3, (down + 2) % 3}
	s := c.servers[down]
	eventually(t, 10*time.Second, "3 endpoints", func() bool { return len(s.Endpoints()) == 3 })
	failover := clientFor(t, s.Endpoints()...) // the client a replica on this member uses
	if _, err := failover.Put(ctx, "before", "1"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	id := s.MemberID()
	s.Close()
	c.servers[down] = nil
	t.Logf("stopped n%d (raft leader %x)", down+1, id)

	// The two left serve writes and reads, also through the client whose
	// first endpoint is the stopped member.
	a, b := clientFor(t, c.servers[up[0]].endpoints...), clientFor(t, c.servers[up[1]].endpoints...)
	const n = 50
	for i := range n {
		if _, err := a.Put(ctx, fmt.Sprintf("k%02d", i), fmt.Sprint(i)); err != nil {
			t.Fatalf("Put via n%d with n%d down: %v", up[0]+1, down+1, err)
		}
	}
	mustGet(ctx, t, b, "k49", "49")
	if _, err := failover.Put(ctx, "during", "2"); err != nil {
		t.Fatalf("Put via the stopped member's client: %v", err)
	}
	mustGet(ctx, t, failover, "k00", "0")

	// Restart on the same data dir, with the same flags as the first time
	// (ClusterState "new" is ignored: the WAL is there).
	begin := time.Now()
	s, err := Start(ctx, c.config(down))
	if err != nil {
		t.Fatalf("restart n%d: %v", down+1, err)
	}
	c.servers[down] = s
	t.Logf("n%d rejoined in %v", down+1, time.Since(begin).Round(time.Millisecond))
	if s.MemberID() != id {
		t.Fatalf("restarted member id %x, want %x (same member)", s.MemberID(), id)
	}

	// Its own state catches up: a serializable read answers from the
	// member alone.
	local := clientFor(t, s.endpoints...)
	eventually(t, 10*time.Second, "caught-up local read", func() bool {
		resp, err := local.Get(ctx, "during", clientv3.WithSerializable())
		return err == nil && len(resp.Kvs) == 1
	})
	mustGet(ctx, t, local, "k49", "49", clientv3.WithSerializable())
	mustGet(ctx, t, local, "before", "1", clientv3.WithSerializable())

	// It serves writes again, seen by the others, and the cluster is
	// three members, each with a raft leader.
	if _, err := local.Put(ctx, "after", "3"); err != nil {
		t.Fatalf("Put via the restarted member: %v", err)
	}
	mustGet(ctx, t, b, "after", "3")
	ml, err := local.MemberList(ctx)
	if err != nil || len(ml.Members) != 3 {
		t.Fatalf("MemberList = %v, %v; want 3", ml, err)
	}
	for _, m := range ml.Members {
		if m.ID == id && (len(m.ClientURLs) != 1 || m.ClientURLs[0] != s.endpoints[0]) {
			t.Errorf("restarted member publishes %v, want %v", m.ClientURLs, s.endpoints)
		}
		if len(m.ClientURLs) == 0 {
			t.Errorf("member %s has no client URL", m.Name)
			continue
		}
		st, err := local.Status(ctx, m.ClientURLs[0])
		if err != nil || st.Leader == 0 || len(st.Errors) > 0 {
			t.Errorf("Status(%s) = %v, %v; want healthy with a leader", m.Name, st, err)
		}
	}
}

// HandOffRaftLeadership moves Raft leadership off the member that has it,
// to another member, and does nothing on a member that does not lead or
// on a single member.
func TestHandOffRaftLeadership(t *testing.T) {
	c := startCluster(t)
	lead := c.raftLeader(t)
	follower := (lead + 1) % 3
	if err := c.servers[follower].HandOffRaftLeadership(t.Context()); err != nil {
		t.Fatalf("hand-off on a follower: %v", err)
	}
	if got := c.raftLeader(t); got != lead {
		t.Fatalf("a follower's hand-off moved Raft leadership from n%d to n%d", lead+1, got+1)
	}
	if err := c.servers[lead].HandOffRaftLeadership(t.Context()); err != nil {
		t.Fatalf("hand-off on the leader: %v", err)
	}
	eventually(t, 10*time.Second, "another Raft leader", func() bool {
		return c.raftLeader(t) != lead
	})

	single := start(t, Config{DataDir: t.TempDir()})
	defer single.Close()
	if err := single.HandOffRaftLeadership(t.Context()); err != nil {
		t.Fatalf("hand-off on a single member: %v", err)
	}
}

// A member that serves no clients any more (as a stopping member, which
// closes its client listeners before it gives Raft leadership away) is
// never handed Raft leadership; with no member left that qualifies, the
// hand-off says so and leadership stays.
func TestHandOffSkipsAMemberThatServesNoClients(t *testing.T) {
	c := startCluster(t)
	lead := c.raftLeader(t)
	closed := (lead + 1) % 3
	for _, l := range c.servers[closed].Etcd().Clients {
		l.Close()
	}
	cur := lead
	for round := 1; round <= 4; round++ {
		if err := c.servers[cur].HandOffRaftLeadership(t.Context()); err != nil {
			t.Fatalf("round %d: hand-off from n%d: %v", round, cur+1, err)
		}
		prev := cur
		eventually(t, 10*time.Second, "another Raft leader", func() bool {
			cur = c.raftLeader(t)
			return cur != prev
		})
		if cur == closed {
			t.Fatalf("round %d: Raft leadership went to n%d, which serves no clients", round, closed+1)
		}
	}
	for i, s := range c.servers {
		if i != cur {
			for _, l := range s.Etcd().Clients {
				l.Close()
			}
		}
	}
	if err := c.servers[cur].HandOffRaftLeadership(t.Context()); !errors.Is(err, ErrNoTransferee) {
		t.Fatalf("hand-off with no member serving clients: %v, want ErrNoTransferee", err)
	}
	if got := c.raftLeader(t); got != cur {
		t.Fatalf("Raft leadership moved from n%d to n%d with no transferee", cur+1, got+1)
	}
}

// Members that advertise a name and listen on an address (PeerListenAddr,
// ClientListenAddr), as pods advertise their DNS names and bind 0.0.0.0,
// form a cluster: the member list holds the advertised URLs, clients use
// them, and the listeners bind the listen addresses only.
func TestClusterListenApartFromAdvertised(t *testing.T) {
	c := startClusterWith(t, clusterOpts{apart: true})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	for i, s := range c.servers {
		want := fmt.Sprintf("http://localhost:%d", c.ports[3+i])
		if got := s.ClientURLs(); len(got) != 1 || got[0] != want {
			t.Errorf("n%d: ClientURLs() = %v, want [%s] (advertised, not the listener's address)", i+1, got, want)
		}
		if got, want := s.PeerURLs(), fmt.Sprintf("http://localhost:%d", c.ports[i]); len(got) != 1 || got[0] != want {
			t.Errorf("n%d: PeerURLs() = %v, want [%s]", i+1, got, want)
		}
		var bound []string
		for _, l := range s.Etcd().Peers {
			bound = append(bound, l.Addr().String())
		}
		for _, l := range s.Etcd().Clients {
			bound = append(bound, l.Addr().String())
		}
		want2 := []string{fmt.Sprintf("127.0.0.1:%d", c.ports[i]), fmt.Sprintf("127.0.0.1:%d", c.ports[3+i])}
		if !slices.Equal(bound, want2) {
			t.Errorf("n%d: listeners bound %v, want %v", i+1, bound, want2)
		}
	}
	c1, c3 := clientFor(t, c.servers[0].ClientURLs()...), clientFor(t, c.servers[2].ClientURLs()...)
	if _, err := c1.Put(ctx, "x", "y"); err != nil {
		t.Fatalf("Put via n1: %v", err)
	}
	mustGet(ctx, t, c3, "x", "y")
	ml, err := c3.MemberList(ctx)
	if err != nil || len(ml.Members) != 3 {
		t.Fatalf("MemberList = %v, %v; want 3 members", ml, err)
	}
	for _, m := range ml.Members {
		if len(m.PeerURLs) != 1 || !strings.Contains(c.initial, m.Name+"="+m.PeerURLs[0]) ||
			len(m.ClientURLs) != 1 || !strings.HasPrefix(m.ClientURLs[0], "http://localhost:") {
			t.Errorf("member %s: client %v peer %v, want the advertised localhost URLs", m.Name, m.ClientURLs, m.PeerURLs)
		}
	}
}
