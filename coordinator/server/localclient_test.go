package server_test

import (
	"context"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// TestSingleMemberCallsEtcdInProcess: a replica on its own embedded
// single-member etcd calls it in process (no dialled endpoint), and every
// use it makes of etcd works so, the cluster view included; replicas
// sharing an etcd they do not run dial it.
func TestSingleMemberCallsEtcdInProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	s := servertest.Start(t, "")
	if eps := s.Client().Endpoints(); len(eps) != 0 {
		t.Fatalf("single member: the etcd client dials %v, want an in-process client", eps)
	}
	view, err := s.Admin.GetCluster(ctx, &pb.GetClusterRequest{})
	if err != nil {
		t.Fatalf("GetCluster: %v", err)
	}
	if len(view.GetMembers()) != 1 || !view.GetMembers()[0].GetHealthy() || view.GetMembers()[0].GetDbSizeBytes() <= 0 ||
		view.GetLeader().GetName() != s.Self().GetName() {
		t.Fatalf("cluster view through the in-process client: %v", view)
	}

	c := servertest.StartCluster(t, 2)
	for _, r := range c.Replicas {
		if len(r.Client().Endpoints()) == 0 {
			t.Fatalf("replica %s of a shared etcd has no endpoints: it must dial", r.Self().GetName())
		}
	}
}
