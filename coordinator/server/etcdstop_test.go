package server

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

// A replica whose embedded member stops on its own (its etcd client talks
// to that member only) reports it on Done, so its process exits instead of
// lingering as a replica that can neither lead nor follow; a Close that
// stops the member reports nothing.
func TestReplicaReportsItsEmbeddedMemberStopping(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := func() *Server {
		t.Helper()
		s, err := Start(ctx, Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start()
	defer s.Close(context.Background())
	s.etcd.Close()
	select {
	case err := <-s.Done():
		if !errors.Is(err, ErrMemberStopped) {
			t.Fatalf("Done reported %v for a stopped etcd member, want ErrMemberStopped", err)
		}
		t.Logf("Done: %v", err)
	case <-ctx.Done():
		t.Fatal("a stopped embedded etcd member was not reported on Done")
	}

	s2 := start()
	if err := s2.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // what watchEtcd would report, it reports at once
	for range cap(s2.done) {
		select {
		case err := <-s2.Done():
			if errors.Is(err, ErrMemberStopped) {
				t.Fatalf("Close reported its own stop of the member: %v", err)
			}
		default:
		}
	}
}
