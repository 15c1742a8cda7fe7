package etcdgate_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator/coordinator/internal/etcdgate"
	"github.com/coordinator/coordinator/storage/embedetcd"
)

// The gate holds, and the delay slows, exactly the writes under its prefix
// (puts, deletes, transactions with such an op); reads and other writes go
// through; a held write gives up with its context.
func TestGate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := embedetcd.Start(ctx, embedetcd.Config{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli := srv.LocalClient()
	defer cli.Close()
	gate := etcdgate.Wrap(cli, "/g/")

	gate.Hold()
	held := make(chan error, 1)
	go func() {
		_, err := cli.Txn(ctx).Then(clientv3.OpPut("/other", "x"), clientv3.OpPut("/g/a", "1")).Commit()
		held <- err
	}()
	for gate.Waiting() != 1 {
		time.Sleep(time.Millisecond)
	}
	if _, err := cli.Put(ctx, "/other", "y"); err != nil {
		t.Fatalf("a write outside the prefix: %v", err)
	}
	if r, err := cli.Get(ctx, "/g/", clientv3.WithPrefix()); err != nil || len(r.Kvs) != 0 {
		t.Fatalf("a read under the prefix while held: %v %v, want nothing written yet", r, err)
	}
	if _, err := cli.Txn(ctx).Then(clientv3.OpGet("/g/a")).Commit(); err != nil {
		t.Fatalf("a read-only transaction under the prefix: %v", err)
	}
	short, scancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = cli.Delete(short, "/g/a")
	scancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a held delete past its deadline: %v, want DeadlineExceeded", err)
	}
	select {
	case err := <-held:
		t.Fatalf("the held transaction went through: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	gate.Release()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if r, err := cli.Get(ctx, "/g/a"); err != nil || len(r.Kvs) != 1 {
		t.Fatalf("after release: %v %v, want /g/a written", r, err)
	}

	gate.SetDelay(100 * time.Millisecond)
	start := time.Now()
	if _, err := cli.Put(ctx, "/g/b", "2"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("a delayed put took %v, want at least 100ms", d)
	}
	if n := gate.Matched(); n != 3 {
		t.Fatalf("%d matching writes seen, want 3", n)
	}
}
