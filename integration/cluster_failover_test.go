package integration

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/sidecar"
)

func (m *member) addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.grpcAddr
}

func clusterView(t *testing.T, addr string) *pb.Cluster {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := pb.NewAdminServiceClient(conn).GetCluster(ctx, &pb.GetClusterRequest{})
	if err != nil {
		return nil
	}
	return v
}

// Three coordinatord processes on their 3-member embedded etcd: killing
// the leader's process (its etcd member dies with it) leaves two replicas
// that elect a new leader and keep serving; the SDK finds it by itself, and
// coordctl cluster shows the dead member.
func TestKillLeaderProcessAndItsEtcdMember(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three coordinatord")
	}
	bin := buildBinary(t, "cmd/coordinatord")
	ctl := buildBinary(t, "cmd/coordctl")
	members := startThreeMembers(t, bin)
	var addrs []string
	for _, m := range members {
		addrs = append(addrs, m.addr())
	}
	var view *pb.Cluster
	servertest.Eventually(t, 30*time.Second, "a leader", func() bool {
		view = clusterView(t, addrs[0])
		return view != nil && view.Leader != nil
	})
	var leader *member
	for _, m := range members {
		if m.addr() == view.Leader.GrpcAddress {
			leader = m
		}
	}
	if leader == nil {
		t.Fatalf("leader %v is none of the members", view.Leader)
	}
	// The leader hands Raft leadership to another member, so that its
	// death does not also cost a Raft election and a lease TTL more.
	raftElsewhere := func() {
		t.Helper()
		servertest.Eventually(t, 30*time.Second, "Raft led by another member than the leader's", func() bool {
			v := clusterView(t, addrs[0])
			if v == nil || v.Leader.GetName() != leader.name {
				return false
			}
			for _, em := range v.Members {
				if em.RaftLeader {
					return em.Name != leader.name
				}
			}
			return false
		})
	}
	raftElsewhere()
	// Raft moved back onto the leader's member (as a Raft election may do)
	// is handed off again.
	v := clusterView(t, addrs[0])
	var own, raft *pb.EtcdMember
	for _, em := range v.GetMembers() {
		if em.Name == leader.name {
			own = em
		}
		if em.RaftLeader {
			raft = em
		}
	}
	if own == nil || raft == nil {
		t.Fatalf("cluster view without the leader's member or a Raft leader: %v", v)
	}
	ecli := etcdClient(t, raft.ClientUrls...)
	raftTerm := func() uint64 {
		t.Helper()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		st, err := ecli.Status(sctx, raft.ClientUrls[0])
		if err != nil {
			t.Fatalf("etcd status: %v", err)
		}
		return st.RaftTerm
	}
	term := raftTerm()
	// MoveLeader waits to see the transferee lead; the hand-off may move
	// leadership on before it looks, so its answer says nothing here: the
	// Raft term does (one election to the leader's member, one away).
	mctx, mcancel := context.WithTimeout(context.Background(), 3*time.Second)
	_, err := ecli.MoveLeader(mctx, own.Id)
	mcancel()
	raftElsewhere()
	servertest.Eventually(t, 10*time.Second, fmt.Sprintf("Raft term past %d+1 (leadership to the leader's member and away again; MoveLeader: %v)", term, err),
		func() bool { return raftTerm() >= term+2 })

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := sidecar.New(sidecar.Config{Coordinators: addrs, InstanceID: "a-1", Service: "a", Version: "v1", Address: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())

	leader.kill() // SIGKILL: no resignation, no flush
	var survivor string
	for _, m := range members {
		if m != leader {
			survivor = m.addr()
		}
	}
	servertest.Eventually(t, 30*time.Second, "a new leader", func() bool {
		view = clusterView(t, survivor)
		return view != nil && view.Leader != nil && view.Leader.Name != leader.name
	})
	unhealthy := 0
	for _, em := range view.Members {
		if !em.Healthy {
			unhealthy++
		}
	}
	if len(view.Members) != 3 || unhealthy != 1 || len(view.Replicas) != 2 {
		var logs strings.Builder
		for _, m := range members {
			if m != leader {
				fmt.Fprintf(&logs, "\n%s:\n%s", m.name, m.stderr())
			}
		}
		t.Fatalf("cluster after the kill: %v\nthe survivors' logs:%s", view, logs.String())
	}

	// The first sidecar comes back by itself; a new one registers.
	d, err := sidecar.New(sidecar.Config{Coordinators: addrs, InstanceID: "b-1", Service: "b", Version: "v1", Address: "127.0.0.1:2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatalf("register after the kill: %v", err)
	}
	defer d.Close(context.Background())
	conn, err := grpc.NewClient(survivor, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)
	servertest.Eventually(t, 30*time.Second, "both sidecars connected to the new leader", func() bool {
		l, err := admin.ListSessions(ctx, &pb.ListSessionsRequest{})
		if err != nil || len(l.Sessions) != 2 {
			return false
		}
		return l.Sessions[0].Connected && l.Sessions[1].Connected
	})

	var out bytes.Buffer
	cmd := exec.Command(ctl, "--server", survivor, "cluster")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("coordctl cluster: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), view.Leader.Name) || !strings.Contains(out.String(), leader.name) {
		t.Fatalf("coordctl cluster does not show the new leader %s and the dead member %s:\n%s", view.Leader.Name, leader.name, out.String())
	}
	t.Logf("coordctl cluster:\n%s", out.String())
}
