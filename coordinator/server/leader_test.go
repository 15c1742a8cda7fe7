package server_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/sidecar"
	"github.com/coordinator/coordinator/storage"
)

const within = 20 * time.Second

func sessionIDs(t *testing.T, admin pb.AdminServiceClient) []string {
	t.Helper()
	l, err := admin.ListSessions(context.Background(), &pb.ListSessionsRequest{})
	if err != nil {
		t.Fatalf("list sessions: %v", err)
	}
	var ids []string
	for _, s := range l.Sessions {
		ids = append(ids, s.InstanceId)
	}
	return ids
}

// A follower answers a sidecar's Register with the leader's address, the
// SDK follows it, admin calls made to the follower are forwarded to the
// leader, and every replica reports the cluster, its role and metrics.
func TestFollowerRedirectsForwardsAndReports(t *testing.T) {
	cl := servertest.StartCluster(t, 2)
	leader := cl.Leader(within)
	f := cl.Follower(leader)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()

	conn, err := grpc.NewClient(f.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := pb.NewSidecarServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Register{Register: &pb.Register{
		InstanceId: "x-1", Service: "x", Version: "v1", HeartbeatInterval: durationpb.New(time.Second)}}}); err != nil {
		t.Fatal(err)
	}
	m, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got := m.GetRedirect().GetLeaderAddress(); got != leader.GRPCAddr() {
		t.Fatalf("follower answered %v, want a redirect to %s", m, leader.GRPCAddr())
	}

	c, err := sidecar.New(sidecar.Config{Coordinators: []string{f.GRPCAddr()}, InstanceID: "a-1", Service: "a", Version: "v1", Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatalf("SDK given only the follower: %v", err)
	}
	defer c.Close(context.Background())
	if ids := sessionIDs(t, leader.Admin); !slices.Equal(ids, []string{"a-1"}) {
		t.Fatalf("leader's sessions %v, want a-1", ids)
	}
	if ids := sessionIDs(t, f.Admin); !slices.Equal(ids, []string{"a-1"}) {
		t.Fatalf("sessions through the follower %v, want a-1 (forwarded)", ids)
	}

	view, err := f.Admin.GetCluster(ctx, &pb.GetClusterRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if view.AnsweredBy != f.Self().Name || view.Leader.GetName() != leader.Self().Name || len(view.Replicas) != 2 ||
		len(view.Members) != 1 || !view.Members[0].Healthy {
		t.Fatalf("cluster view from the follower: %v", view)
	}

	var fh, lh server.HealthReport
	if code := f.REST("/health", &fh); code != http.StatusOK || fh.Role != "follower" || fh.Leader != leader.GRPCAddr() {
		t.Fatalf("follower /health: HTTP %d %+v", code, fh)
	}
	if code := leader.REST("/health", &lh); code != http.StatusOK || lh.Role != "leader" || lh.Sessions != 1 {
		t.Fatalf("leader /health: HTTP %d %+v", code, lh)
	}
	if f.Metric("coordinator_is_leader") != 0 || leader.Metric("coordinator_is_leader") != 1 {
		t.Fatal("coordinator_is_leader: want 0 on the follower, 1 on the leader")
	}
	if f.Metric("coordinator_sidecar_redirects_total") < 2 {
		t.Fatal("the follower's redirects are not counted")
	}
	if leader.Metric("coordinator_sessions") != 1 || f.Metric("coordinator_sessions") != 0 {
		t.Fatal("coordinator metrics: want them from the leader's term only")
	}
}

// electionKey returns the leader's election key and its lease.
func electionKey(t *testing.T, cli *clientv3.Client) (string, clientv3.LeaseID) {
	t.Helper()
	resp, err := cli.Get(context.Background(), storage.Keys{Prefix: storage.DefaultPrefix}.Election()+"/",
		clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("election key: %v %v", resp, err)
	}
	return string(resp.Kvs[0].Key), clientv3.LeaseID(resp.Kvs[0].Lease)
}

// A leader whose election session ends stops leading at once; the other
// replica takes over and the sidecars follow.
func TestLeaderWhoseSessionEndsStopsAtOnce(t *testing.T) {
	cl := servertest.StartCluster(t, 2)
	leader := cl.Leader(within)
	f := cl.Follower(leader)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	c, err := sidecar.New(sidecar.Config{Coordinators: cl.Addrs(), InstanceID: "a-1", Service: "a", Version: "v1", Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())

	_, lease := electionKey(t, leader.Client())
	if _, err := leader.Client().Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, within, "the old leader to stop leading", func() bool { return leader.Leader() == nil || f.Leader() != nil })
	next := cl.Leader(within)
	servertest.Eventually(t, within, "the sidecar to register with the leader", func() bool {
		l, err := next.Admin.ListSessions(ctx, &pb.ListSessionsRequest{})
		return err == nil && len(l.Sessions) == 1 && l.Sessions[0].Connected
	})
}

// A leader whose election key is gone (another replica may lead) cannot
// write: its first write fails the fence, it stops acting, and the
// replicas elect a leader again.
func TestFencedWriteEndsTheTerm(t *testing.T) {
	cl := servertest.StartCluster(t, 2)
	leader := cl.Leader(within)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	key, _ := electionKey(t, leader.Client())
	coord := leader.Leader()
	if _, err := leader.Client().Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	// A registration writes the session record: fenced.
	sc, err := grpc.NewClient(leader.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	st, err := pb.NewSidecarServiceClient(sc).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Register{Register: &pb.Register{
		InstanceId: "a-1", Service: "a", Version: "v1", HeartbeatInterval: durationpb.New(time.Second)}}})
	if m, err := st.Recv(); err == nil && m.GetRegistered() != nil {
		t.Fatalf("a coordinator whose election key is gone registered a sidecar: %v", m)
	}
	servertest.Eventually(t, within, "the fenced term to end", func() bool {
		for _, r := range cl.Replicas {
			if r.Leader() == coord {
				return false
			}
		}
		return true
	})
	next := cl.Leader(within)
	if next.Leader() == coord {
		t.Fatal("the fenced coordinator leads again")
	}
	if resp, err := next.Client().Get(ctx, storage.Keys{Prefix: storage.DefaultPrefix}.Session("a-1")); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("the fenced registration was written: %v %v", resp, err)
	}
}

// A leader whose election key is gone steps down even if it writes
// nothing: it sees another replica's key first.
func TestIdleLeaderWhoseKeyIsGoneStepsDown(t *testing.T) {
	cl := servertest.StartCluster(t, 2)
	leader := cl.Leader(within)
	coord := leader.Leader()
	key, _ := electionKey(t, leader.Client())
	if _, err := leader.Client().Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, within, "the old term to end without any write", func() bool {
		for _, r := range cl.Replicas {
			if r.Leader() == coord {
				return false
			}
		}
		return true
	})
	cl.Leader(within)
}
