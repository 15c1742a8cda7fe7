package server_test

import (
	"context"
	"sync/atomic"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/storage"
)

// failObserve fails the first read of etcd's Election.Observe (the first
// key under the election prefix: a Get limited to one key, no maximum
// create revision), as etcd does when a request times out while it elects
// a Raft leader.
type failObserve struct {
	clientv3.KV
	prefix string
	failed atomic.Int32
}

func (f *failObserve) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	op := clientv3.OpGet(key, opts...)
	if key == f.prefix && op.Limit() == 1 && op.MaxCreateRev() == 0 && f.failed.CompareAndSwap(0, 1) {
		return nil, rpctypes.ErrTimeout
	}
	return f.KV.Get(ctx, key, opts...)
}

// etcd's Observe ends, silently, when one of its reads fails: a replica
// whose first observation failed so never learned who leads (its /health
// said "no leader elected" while another led, and it could not forward:
// TestThreeCoordinatordWithTLSEverywhere failed so in CI). It observes
// again: both replicas, each of whose first observation failed, know the
// leader.
func TestReplicaObservesAgainAfterAFailedObservation(t *testing.T) {
	prefix := storage.Keys{Prefix: storage.DefaultPrefix}.Election() + "/"
	cl, wrapped := startWrapped(t, 2, func(kv clientv3.KV) *failObserve { return &failObserve{KV: kv, prefix: prefix} })
	leader := cl.Leader(within)
	f := cl.Follower(leader)
	servertest.Eventually(t, within, "the follower to know the leader", func() bool {
		l := f.LeaderInfo()
		return l != nil && l.Name == leader.Self().Name
	})
	for i, w := range wrapped {
		if w.failed.Load() != 1 {
			t.Errorf("replica %d: its first observation did not fail (the test does not test what it says)", i)
		}
	}
}
