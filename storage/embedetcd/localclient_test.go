package embedetcd

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// TestLocalClient checks that the in-process client does everything the
// coordinator asks of etcd: conditional transactions, leases with
// keep-alives, watches, an election, and the errors it tells apart (a
// lease that is gone), exactly as a gRPC client reports them.
func TestLocalClient(t *testing.T) {
	s := start(t, Config{DataDir: t.TempDir()})
	defer s.Close()
	cli := s.LocalClient()
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if len(cli.Endpoints()) != 0 {
		t.Fatalf("local client has endpoints %v: it dials", cli.Endpoints())
	}
	wch := cli.Watch(ctx, "/w/", clientv3.WithPrefix())

	lease, err := cli.Grant(ctx, 2)
	if err != nil {
		t.Fatalf("grant: %v", err)
	}
	ka, err := cli.KeepAlive(ctx, lease.ID)
	if err != nil {
		t.Fatalf("keepalive: %v", err)
	}
	select {
	case r := <-ka:
		if r == nil || r.TTL <= 0 {
			t.Fatalf("keepalive answer %v", r)
		}
	case <-ctx.Done():
		t.Fatal("no keepalive answer")
	}

	put, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision("/w/a"), "=", 0)).
		Then(clientv3.OpPut("/w/a", "1", clientv3.WithLease(lease.ID))).Commit()
	if err != nil || !put.Succeeded {
		t.Fatalf("txn: %v, succeeded %v", err, put != nil && put.Succeeded)
	}
	again, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision("/w/a"), "=", 0)).
		Then(clientv3.OpPut("/w/a", "2")).Commit()
	if err != nil || again.Succeeded {
		t.Fatalf("second txn: %v, succeeded %v: the compare did not hold it back", err, again != nil && again.Succeeded)
	}
	select {
	case wr := <-wch:
		if len(wr.Events) != 1 || string(wr.Events[0].Kv.Value) != "1" {
			t.Fatalf("watch: %+v", wr.Events)
		}
	case <-ctx.Done():
		t.Fatal("no watch event")
	}

	// A put on a revoked lease: the pin committer relies on telling this
	// error apart.
	if _, err := cli.Revoke(ctx, lease.ID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	_, err = cli.Put(ctx, "/w/b", "x", clientv3.WithLease(lease.ID))
	if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.Fatalf("put on a revoked lease: %v, want %v", err, rpctypes.ErrLeaseNotFound)
	}
	if g, err := cli.Get(ctx, "/w/", clientv3.WithPrefix()); err != nil || g.Count != 0 {
		t.Fatalf("after revoke: %v, %d keys left", err, g.Count)
	}

	// An election, as the replicas run it.
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(2))
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	e := concurrency.NewElection(sess, "/elect/")
	if err := e.Campaign(ctx, "me"); err != nil {
		t.Fatalf("campaign: %v", err)
	}
	l, err := e.Leader(ctx)
	if err != nil || string(l.Kvs[0].Value) != "me" {
		t.Fatalf("leader: %v %v", err, l)
	}
	if err := sess.Close(); err != nil {
		t.Fatalf("close session: %v", err)
	}
}

// BenchmarkPut compares one etcd put through the in-process client and
// through a gRPC client on loopback, one at a time (the latency a pinned
// call waits for).
func BenchmarkPut(b *testing.B) {
	s, err := Start(context.Background(), Config{DataDir: b.TempDir(), ClientAddr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for _, tc := range []struct {
		name string
		cli  func() (*clientv3.Client, error)
	}{
		{"local", func() (*clientv3.Client, error) { return s.LocalClient(), nil }},
		{"grpc", func() (*clientv3.Client, error) { return clientv3.New(clientv3.Config{Endpoints: s.Endpoints()}) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cli, err := tc.cli()
			if err != nil {
				b.Fatal(err)
			}
			defer cli.Close()
			ctx := context.Background()
			i := 0
			for b.Loop() {
				i++
				if _, err := cli.Put(ctx, fmt.Sprintf("/bench/%d", i%1000), "v2"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
