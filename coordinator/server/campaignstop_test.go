package server_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/etcdgate"
	"github.com/coordinator/coordinator/storage"
)

// A follower that stops while etcd does not answer its election's writes
// (its campaign resigning the candidate key) stops within its bound: the
// campaign's clean-up gets campaignStopGrace, not until the etcd client
// closes, which Close does only after the campaign has ended. A follower
// of a cluster that had just formed, on a loaded machine, took more than
// 5 s to exit on SIGTERM that way.
func TestFollowerStopsWhileItsElectionWritesHang(t *testing.T) {
	prefix := storage.Keys{Prefix: storage.DefaultPrefix}.Election()
	var gated []*etcdgate.KV
	wrap := func(cfg *server.Config) {
		cfg.WrapKV = func(kv clientv3.KV) clientv3.KV {
			g := etcdgate.New(kv, prefix)
			gated = append(gated, g)
			return g
		}
	}
	cl := servertest.StartCluster(t, 2, wrap)
	leader := cl.Leader(within)
	f := cl.Follower(leader)
	// Replicas start one after the other: the follower's gate is the
	// second one made.
	if len(gated) != 2 {
		t.Fatalf("%d gated clients, want 2", len(gated))
	}
	g := gated[1]
	if cl.Replicas[0] == f {
		g = gated[0]
	}
	// The follower campaigns: its candidate key is there, and it waits
	// for the leader's to go.
	servertest.Eventually(t, within, "the follower's candidate key", func() bool {
		resp, err := leader.Client().Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == 2
	})
	g.Hold()
	defer g.Release()

	closed := make(chan error, 1)
	begin := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		closed <- f.StopWith(ctx)
	}()
	// The bound: campaignStopGrace (1 s) for the resignation and as much
	// for the session's revoke, with slack for a loaded machine; before the
	// fix Close waited for as long as etcd did not answer.
	select {
	case err := <-closed:
		t.Logf("follower stopped in %v with its election's writes held (%d waiting, %d matched): %v",
			time.Since(begin).Round(time.Millisecond), g.Waiting(), g.Matched(), err)
	case <-time.After(5 * time.Second):
		g.Release()
		<-closed
		t.Fatalf("a follower whose election writes hang did not stop within 5 s (stopped %v after, once they were released)",
			time.Since(begin).Round(time.Millisecond))
	}
}
