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
// (storage/memstore runs the same suite on itself). The subtests share one
// etcd, each under a prefix of its own, fenced on a key of its own.
func TestEtcdStoreConformance(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lg := slog.New(slog.DiscardHandler)
	srv, err := embedetcd.Start(ctx, embedetcd.Config{DataDir: t.TempDir(), Logger: lg})
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
		st := storage.NewEtcd(cli, storage.EtcdConfig{Prefix: prefix, Logger: lg,
			Fence: &storage.Fence{Key: fence, CreateRev: put.Header.Revision}})
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
