package server_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/storage"
)

// failOnce fails the next read of a campaign waiting for the keys ahead of
// it (a Get under the election prefix with a maximum create revision), once
// armed, as etcd does when a request times out while it elects a Raft
// leader.
type failOnce struct {
	clientv3.KV
	prefix string
	armed  atomic.Bool
	failed atomic.Int32
}

func (f *failOnce) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if strings.HasPrefix(key, f.prefix) && clientv3.OpGet(key, opts...).MaxCreateRev() > 0 && f.armed.CompareAndSwap(true, false) {
		f.failed.Add(1)
		return nil, rpctypes.ErrTimeout
	}
	return f.KV.Get(ctx, key, opts...)
}

// A follower whose campaign meets a failed request campaigns again in the
// same session: its candidate key stays (it stays listed in the cluster
// view and keeps its place in line) and it leads once the leader goes. A
// new session would first delete the key: TestKillLeaderProcessAndItsEtcdMember
// saw the survivor missing from the view after "etcdserver: request timed
// out".
func TestCampaignKeepsItsKeyThroughAFailedRequest(t *testing.T) {
	prefix := storage.Keys{Prefix: storage.DefaultPrefix}.Election()
	cl, wrapped := startWrapped(t, 2, func(kv clientv3.KV) *failOnce { return &failOnce{KV: kv, prefix: prefix} })
	leader := cl.Leader(within)
	f := cl.Follower(leader)
	fail := wrapped[1]
	if cl.Replicas[0] == f {
		fail = wrapped[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cli := cl.Replicas[0].Client()
	var keys *clientv3.GetResponse
	servertest.Eventually(t, within, "both candidate keys", func() bool {
		var err error
		keys, err = cli.Get(ctx, prefix+"/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
		return err == nil && len(keys.Kvs) == 2
	})
	followerKey, created := string(keys.Kvs[1].Key), keys.Kvs[1].CreateRevision

	fail.armed.Store(true)
	leader.Stop() // its key goes: the follower looks for keys ahead of its own again
	servertest.Eventually(t, within, "the follower to lead", func() bool { return f.Leader() != nil })
	if n := fail.failed.Load(); n != 1 {
		t.Fatalf("the follower's campaign met %d failed reads, want 1", n)
	}
	// A new session would have deleted the key (its lease revoked) and
	// made another, named after its new lease.
	resp, err := f.Client().Get(ctx, followerKey)
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != created {
		t.Fatalf("the follower's candidate key %s (created at revision %d) after it leads: %v, %v; want it kept", followerKey, created, resp, err)
	}
}

// startWrapped starts a cluster of n replicas, each with its etcd KV
// wrapped by wrap, and returns the wrappers in the order the replicas
// started (cl.Replicas').
func startWrapped[W clientv3.KV](t *testing.T, n int, wrap func(clientv3.KV) W) (*servertest.Cluster, []W) {
	var wrapped []W
	cl := servertest.StartCluster(t, n, func(cfg *server.Config) {
		cfg.WrapKV = func(kv clientv3.KV) clientv3.KV {
			w := wrap(kv)
			wrapped = append(wrapped, w)
			return w
		}
	})
	return cl, wrapped
}
