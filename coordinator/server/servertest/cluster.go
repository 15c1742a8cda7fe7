package servertest

import (
	"context"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/storage/embedetcd"
)

// Cluster is n replicas in one process sharing one embedded etcd, as
// replicas sharing an external etcd cluster do (--etcd-endpoints).
type Cluster struct {
	t        testing.TB
	Etcd     *embedetcd.Server
	Replicas []*Server
}

// StartCluster starts an embedded etcd and n replicas on it; it returns
// once one of them leads.
func StartCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	etcd, err := embedetcd.Start(ctx, embedetcd.Config{DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, Etcd: etcd}
	t.Cleanup(func() { etcd.Close() }) // after the replicas' cleanups
	shared := func(cfg *server.Config) { cfg.EtcdEndpoints = etcd.Endpoints() }
	for range n {
		c.Replicas = append(c.Replicas, Start(t, "", append([]Option{shared}, opts...)...))
	}
	c.Leader(time.Minute)
	return c
}

// Addrs are the replicas' gRPC addresses.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, r := range c.Replicas {
		out = append(out, r.Self().GrpcAddress)
	}
	return out
}

// Leader waits until exactly one live replica leads and returns it.
func (c *Cluster) Leader(within time.Duration) *Server {
	c.t.Helper()
	var leader *Server
	Eventually(c.t, within, "one replica to lead", func() bool {
		leader = nil
		for _, r := range c.Replicas {
			if r.Leader() != nil {
				if leader != nil {
					return false
				}
				leader = r
			}
		}
		return leader != nil
	})
	return leader
}

// Follower returns a live replica that does not lead.
func (c *Cluster) Follower(leader *Server) *Server {
	for _, r := range c.Replicas {
		if r != leader && !r.Crashed() {
			return r
		}
	}
	c.t.Fatal("no live follower")
	return nil
}

// Crash crashes replica r (see server.Server.Crash).
func (c *Cluster) Crash(r *Server) {
	r.Crash()
	if r.Conn != nil {
		r.Conn.Close()
		r.Conn = nil
	}
}
