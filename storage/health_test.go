package storage

import (
	"errors"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	srv, cli := startEtcd(t)
	if err := Check(testCtx(t, 10*time.Second), cli); err != nil {
		t.Fatalf("Check on a healthy etcd: %v", err)
	}

	srv.Close()
	start := time.Now()
	err := Check(testCtx(t, 10*time.Second), cli)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Check with etcd stopped = %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > DefaultHealthTimeout+time.Second {
		t.Fatalf("Check took %v, its bound is %v", took, DefaultHealthTimeout)
	}
	t.Logf("unavailable after %v: %v", time.Since(start).Round(time.Millisecond), err)
}
