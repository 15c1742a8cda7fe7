package storage_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/coordinator/coordinator/storage"
	"github.com/coordinator/coordinator/storage/embedetcd"
	"github.com/coordinator/coordinator/storage/storetest"
)

// The Etcd store passes the conformance suite on a real embedded etcd
// (storage/memstore runs the same suite on itself), with leases renewed by
// the client and, as coordinatord does on a single member, in process. The
// subtests share one etcd, each under a prefix of its own, fenced on a key
// of its own.
func TestEtcdStoreConformance(t *testing.T) {
	t.Run("client", func(t *testing.T) { testEtcdStoreConformance(t, false) })
	t.Run("renew-in-process", func(t *testing.T) { testEtcdStoreConformance(t, true) })
}

func testEtcdStoreConformance(t *testing.T, inProcess bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lg := slog.New(slog.DiscardHandler)
	srv, err := embedetcd.Start(ctx, embedetcd.Config{DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0", Logger: lg})
	if err != nil {
		t.Fatalf("embedded etcd: %v", err)
	}
	t.Cleanup(srv.Close)
	cli, err := storage.NewClient(srv.Endpoints(), lg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		prefix := "/conformance/" + strings.ReplaceAll(t.Name(), "/", "_") + "/"
		fence := prefix + "election"
		pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer pcancel()
		put, err := cli.Put(pctx, fence, "me")
		if err != nil {
			t.Fatal(err)
		}
		cfg := storage.EtcdConfig{Prefix: prefix, Logger: lg,
			Fence: &storage.Fence{Key: fence, CreateRev: put.Header.Revision}}
		if inProcess {
			cfg.Renew = func(ctx context.Context, id storage.LeaseID) (time.Duration, error) {
				return srv.RenewLease(ctx, int64(id))
			}
		}
		st := storage.NewEtcd(cli, cfg)
		return storetest.Harness{Store: st, Fence: func(t *testing.T) {
			// Another replica's election key now, with a new create revision.
			if _, err := cli.Delete(context.Background(), fence); err != nil {
				t.Fatal(err)
			}
			if _, err := cli.Put(context.Background(), fence, "someone else"); err != nil {
				t.Fatal(err)
			}
		}}
	})
}
