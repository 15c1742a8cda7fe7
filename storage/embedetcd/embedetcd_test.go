package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func newClient(t *testing.T, s *Server) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   s.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	return cli
}

func start(t *testing.T, cfg Config) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	begin := time.Now()
	s, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("%s ready in %v at %v", cfg.Name, time.Since(begin).Round(time.Millisecond), s.Endpoints())
	return s
}

// recorder is a slog.Handler keeping the messages it gets.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }
func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func TestStartSingleMember(t *testing.T) {
	rec := &recorder{}
	s := start(t, Config{DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0", Logger: slog.New(rec), LogLevel: "info"})
	defer s.Close()

	eps := s.Endpoints()
	if len(eps) != 1 {
		t.Fatalf("Endpoints() = %v, want one", eps)
	}
	u, err := url.Parse(eps[0])
	if err != nil || u.Hostname() != "127.0.0.1" || u.Port() == "" || u.Port() == "0" {
		t.Fatalf("endpoint %q: want http://127.0.0.1:<bound port> (%v)", eps[0], err)
	}

	cli := newClient(t, s)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("Get = %v, %v", resp, err)
	}

	// What etcd advertises is what it listens on.
	ml, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatalf("MemberList: %v", err)
	}
	if len(ml.Members) != 1 {
		t.Fatalf("members = %v", ml.Members)
	}
	m := ml.Members[0]
	if fmt.Sprint(m.ClientURLs) != fmt.Sprint(eps) || fmt.Sprint(m.PeerURLs) != fmt.Sprint(s.PeerURLs()) {
		t.Fatalf("member advertises client %v peer %v, want %v and %v", m.ClientURLs, m.PeerURLs, eps, s.PeerURLs())
	}
	if rec.len() == 0 {
		t.Fatalf("no etcd log reached the slog handler at level info")
	}
}

// A lone member ticks raft every 100 ms (an idle member's main cost: at
// 25 ms it took twice the CPU, docs/BENCHMARKS.md) with the shortest
// election timeout etcd accepts for it, 5 ticks; an explicit setting wins.
// A cluster member keeps etcd's 100/1000 ms (TestRaftTimingOfAClusterMember).
func TestRaftTimingOfALoneMember(t *testing.T) {
	for _, tc := range []struct {
		name             string
		tick, election   uint
		wantTick, wantEl uint
	}{
		{"default", 0, 0, 100, 500},
		{"explicit", 50, 500, 50, 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, Config{DataDir: t.TempDir(), TickMs: tc.tick, ElectionMs: tc.election})
			defer s.Close()
			cfg := s.Etcd().Server.Cfg
			if cfg.TickMs != tc.wantTick || uint(cfg.ElectionTicks)*cfg.TickMs != tc.wantEl {
				t.Fatalf("tick %d ms, election %d ticks; want %d ms and %d ms in all", cfg.TickMs, cfg.ElectionTicks, tc.wantTick, tc.wantEl)
			}
		})
	}
}

func TestRestartSameDataDir(t *testing.T) {
	dir := t.TempDir()
	s1 := start(t, Config{Name: "n1", DataDir: dir, ClientAddr: "127.0.0.1:0"})
	cli := newClient(t, s1)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatalf("Grant: %v", err)
	}
	if _, err := cli.Put(ctx, "leased", "1", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatalf("Put leased: %v", err)
	}
	if _, err := cli.Put(ctx, "plain", "2"); err != nil {
		t.Fatalf("Put plain: %v", err)
	}
	cli.Close()
	oldEps, oldPeers := s1.Endpoints(), s1.PeerURLs()
	s1.Close()
	select {
	case <-s1.Stopped():
	default:
		t.Fatalf("Stopped() not closed after Close")
	}

	s2 := start(t, Config{Name: "n1", DataDir: dir, ClientAddr: "127.0.0.1:0"})
	defer s2.Close()
	t.Logf("client %v -> %v, peer %v -> %v", oldEps, s2.Endpoints(), oldPeers, s2.PeerURLs())
	cli = newClient(t, s2)
	defer cli.Close()

	for k, want := range map[string]string{"leased": "1", "plain": "2"} {
		resp, err := cli.Get(ctx, k)
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != want {
			t.Fatalf("after restart Get(%q) = %v, %v; want %q", k, resp, err, want)
		}
		if k == "leased" && clientv3.LeaseID(resp.Kvs[0].Lease) != lease.ID {
			t.Fatalf("leased key lost its lease: %x, want %x", resp.Kvs[0].Lease, lease.ID)
		}
	}
	ttl, err := cli.TimeToLive(ctx, lease.ID)
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("after restart TimeToLive = %v, %v; want a live lease", ttl, err)
	}
	if _, err := cli.KeepAliveOnce(ctx, lease.ID); err != nil {
		t.Fatalf("KeepAliveOnce after restart: %v", err)
	}

	// The stored peer URL follows the new port.
	ml, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatalf("MemberList: %v", err)
	}
	if got := fmt.Sprint(ml.Members[0].PeerURLs); got != fmt.Sprint(s2.PeerURLs()) {
		t.Fatalf("stored peer URLs %v, want %v", got, s2.PeerURLs())
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no data dir", Config{}},
		{"bad client addr", Config{DataDir: dir, ClientAddr: "127.0.0.1"}},
		{"unspecified host", Config{DataDir: dir, ClientAddr: "0.0.0.0:0"}},
		{"bad state", Config{DataDir: dir, ClusterState: "old"}},
		{"existing without cluster", Config{DataDir: dir, ClusterState: "existing"}},
		{"name not in cluster", Config{DataDir: dir, Name: "n9", InitialCluster: "n1=http://127.0.0.1:2380"}},
		{"port 0 in cluster", Config{DataDir: dir, Name: "n1", InitialCluster: "n1=http://127.0.0.1:0"}},
		{"peer listen addr without port", Config{DataDir: dir, Name: "n1", PeerListenAddr: "0.0.0.0",
			InitialCluster: "n1=http://127.0.0.1:2380"}},
		{"peer listen addr port 0", Config{DataDir: dir, Name: "n1", PeerListenAddr: "0.0.0.0:0",
			InitialCluster: "n1=http://127.0.0.1:2380"}},
		{"peer listen addr without host", Config{DataDir: dir, Name: "n1", PeerListenAddr: ":2380",
			InitialCluster: "n1=http://127.0.0.1:2380"}},
		{"peer listen addr, single member on port 0", Config{DataDir: dir, PeerListenAddr: "127.0.0.1:2380"}},
		{"client listen addr without client addr", Config{DataDir: dir, ClientListenAddr: "0.0.0.0:2379"}},
		{"client listen addr, client addr port 0", Config{DataDir: dir, ClientAddr: "localhost:0", ClientListenAddr: "0.0.0.0:2379"}},
		{"client listen addr port 0", Config{DataDir: dir, ClientAddr: "localhost:2379", ClientListenAddr: "0.0.0.0:0"}},
		{"peer addr mismatch", Config{DataDir: dir, Name: "n1", PeerAddr: "127.0.0.1:1",
			InitialCluster: "n1=http://127.0.0.1:2380"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Start(t.Context(), tc.cfg)
			if !errors.Is(err, ErrInvalidConfig) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("Start(%+v) = %v, want ErrInvalidConfig", tc.cfg, err)
			}
		})
	}
}

func TestStartTimeout(t *testing.T) {
	// A member of a three-member cluster whose peers never come cannot
	// become ready: Start gives up at its deadline and leaves nothing
	// running.
	ports, err := freePorts([]string{"127.0.0.1", "127.0.0.1", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	initial := fmt.Sprintf("n1=http://127.0.0.1:%d,n2=http://127.0.0.1:%d,n3=http://127.0.0.1:%d", ports[0], ports[1], ports[2])
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	s, err := Start(ctx, Config{Name: "n1", DataDir: t.TempDir(), InitialCluster: initial})
	if !errors.Is(err, ErrNotReady) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Start = %v, want ErrNotReady", err)
	}
}

// The default keeps seconds of history: a coordinator writes revisions all
// the time, and etcd holds each in memory until it is compacted.
func TestDefaultCompactionKeepsSeconds(t *testing.T) {
	cfg := Config{DataDir: t.TempDir()}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	ec, _, err := cfg.embedConfig(new(atomic.Bool))
	if err != nil {
		t.Fatal(err)
	}
	d, err := time.ParseDuration(ec.AutoCompactionRetention)
	if ec.AutoCompactionMode != "periodic" || err != nil || d <= 0 || d > 30*time.Second {
		t.Fatalf("auto compaction %s %q (%v): want periodic, at most 30s", ec.AutoCompactionMode, ec.AutoCompactionRetention, err)
	}
}

// The retention reaches etcd: history older than it is compacted away.
func TestAutoCompactionRuns(t *testing.T) {
	s := start(t, Config{DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0", AutoCompactionRetention: "1s"})
	defer s.Close()
	cli := newClient(t, s)
	defer cli.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	first, err := cli.Put(ctx, "k", "v0")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; ; i++ {
		if _, err := cli.Put(ctx, "k", fmt.Sprint("v", i)); err != nil {
			t.Fatal(err)
		}
		_, err := cli.Get(ctx, "k", clientv3.WithRev(first.Header.Revision))
		if errors.Is(err, rpctypes.ErrCompacted) {
			return
		}
		if err != nil {
			t.Fatalf("Get at revision %d: %v", first.Header.Revision, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("revision %d not compacted within 20 s with a 1s retention", first.Header.Revision)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
