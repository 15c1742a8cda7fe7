package server

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/protobuf/proto"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
	"github.com/coordinator/coordinator/storage/embedetcd"
)

// campaign makes a fake replica campaign under prefix on its own session
// and returns once it leads; cancel the context to stop waiting.
func campaign(ctx context.Context, t *testing.T, cli *clientv3.Client, prefix string, r *pb.Replica) (*concurrency.Session, <-chan error) {
	t.Helper()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatalf("session for %s: %v", r.GetName(), err)
	}
	t.Cleanup(func() { sess.Close() })
	val, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	led := make(chan error, 1)
	go func() { led <- concurrency.NewElection(sess, prefix).Campaign(ctx, string(val)) }()
	return sess, led
}

// viewUntil polls ClusterView until ok accepts it.
func viewUntil(ctx context.Context, t *testing.T, cli *clientv3.Client, prefix string, what string, ok func(*pb.Cluster) bool) *pb.Cluster {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := ClusterView(ctx, cli, prefix, "r-answering")
		if err == nil && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("no view with %s after 10s: last %v, %v", what, v, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startEtcd starts a single embedded member for the test, closed at its
// end (after the clients the test closes with defer).
func startEtcd(ctx context.Context, t *testing.T) *embedetcd.Server {
	t.Helper()
	etcd, err := embedetcd.Start(ctx, embedetcd.Config{DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	return etcd
}

func TestClusterView(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	etcd := startEtcd(ctx, t)
	cli, err := storage.NewClient(etcd.Endpoints(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	prefix := storage.Keys{Prefix: "/view-test/"}.Election()

	// Nobody campaigns: no leader, one healthy member.
	v, err := ClusterView(ctx, cli, prefix, "r-answering")
	if err != nil {
		t.Fatalf("ClusterView: %v", err)
	}
	if v.GetLeader() != nil || len(v.GetReplicas()) != 0 || v.GetAnsweredBy() != "r-answering" {
		t.Fatalf("empty election: %v", v)
	}

	r1 := &pb.Replica{Name: "r1", GrpcAddress: "127.0.0.1:7400", HttpAddress: "127.0.0.1:7401"}
	r2 := &pb.Replica{Name: "r2", GrpcAddress: "127.0.0.1:7410", HttpAddress: "127.0.0.1:7411"}
	s1, led1 := campaign(ctx, t, cli, prefix, r1)
	if err := <-led1; err != nil {
		t.Fatalf("r1 campaign: %v", err)
	}
	_, led2 := campaign(ctx, t, cli, prefix, r2) // waits behind r1

	v = viewUntil(ctx, t, cli, prefix, "two replicas", func(v *pb.Cluster) bool { return len(v.GetReplicas()) == 2 })
	if !proto.Equal(v.GetLeader(), withLeader(r1, true)) {
		t.Errorf("leader %v, want r1", v.GetLeader())
	}
	if !proto.Equal(v.GetReplicas()[0], withLeader(r1, true)) || !proto.Equal(v.GetReplicas()[1], withLeader(r2, false)) {
		t.Errorf("replicas %v, want r1 (leading) then r2", v.GetReplicas())
	}
	if len(v.GetMembers()) != 1 {
		t.Fatalf("members %v, want one", v.GetMembers())
	}
	m := v.GetMembers()[0]
	if !m.GetHealthy() || !m.GetRaftLeader() || m.GetError() != "" || m.GetId() != etcd.MemberID() ||
		m.GetName() != embedetcd.DefaultName || m.GetDbSizeBytes() <= 0 || m.GetRaftIndex() == 0 ||
		len(m.GetClientUrls()) != 1 || m.GetClientUrls()[0] != etcd.Endpoints()[0] {
		t.Errorf("member %v: want healthy raft leader %x at %v with a db and a raft index", m, etcd.MemberID(), etcd.Endpoints())
	}

	// r1 goes: r2 leads, alone.
	if err := s1.Close(); err != nil {
		t.Fatalf("close r1's session: %v", err)
	}
	if err := <-led2; err != nil {
		t.Fatalf("r2 campaign: %v", err)
	}
	v = viewUntil(ctx, t, cli, prefix, "r2 alone", func(v *pb.Cluster) bool { return len(v.GetReplicas()) == 1 })
	if !proto.Equal(v.GetLeader(), withLeader(r2, true)) {
		t.Errorf("after r1 left: leader %v, want r2", v.GetLeader())
	}

	// A member added but never started is listed, not healthy, with why.
	if _, err := cli.MemberAddAsLearner(ctx, []string{"http://127.0.0.1:1"}); err != nil {
		t.Fatalf("MemberAddAsLearner: %v", err)
	}
	v = viewUntil(ctx, t, cli, prefix, "two members", func(v *pb.Cluster) bool { return len(v.GetMembers()) == 2 })
	for _, m := range v.GetMembers() {
		if m.GetId() == etcd.MemberID() {
			if !m.GetHealthy() || !m.GetRaftLeader() {
				t.Errorf("started member %v: want healthy raft leader", m)
			}
			continue
		}
		if m.GetHealthy() || m.GetRaftLeader() || !m.GetLearner() || m.GetError() == "" {
			t.Errorf("unstarted learner %v: want not healthy, learner, with an error", m)
		}
	}
}

func withLeader(r *pb.Replica, leader bool) *pb.Replica {
	c := proto.CloneOf(r)
	c.Leader = leader
	return c
}

// An in-process client answers every Status itself, whatever the URL: a
// member it is not must not be reported with this member's health.
func TestMemberStatusThroughAnInProcessClient(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	etcd := startEtcd(ctx, t)
	cli := etcd.LocalClient()
	defer cli.Close()

	self := &pb.EtcdMember{Id: etcd.MemberID(), ClientUrls: etcd.Endpoints()}
	if memberStatus(ctx, cli, self) == nil || !self.Healthy {
		t.Fatalf("the member itself: %v", self)
	}
	other := &pb.EtcdMember{Id: etcd.MemberID() + 1, ClientUrls: []string{"http://127.0.0.1:1"}}
	if st := memberStatus(ctx, cli, other); st != nil || other.Healthy || !strings.Contains(other.Error, "answered by member") {
		t.Fatalf("another member through the in-process client: %v (status %v)", other, st)
	}
}
