package coordinator_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
)

// Every batch goes through the applier while the coordinator runs, and
// through its own handler once the applier has stopped: streams that keep
// sending through Stop each get an Ack for every batch or see their
// stream end, and Stop drains them. A handler that waited for an applier
// gone would keep its sender waiting until the gRPC server closed.
func TestBatchesAreAnsweredThroughStop(t *testing.T) {
	ts := startMem(t)
	const streams = 8
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var acked atomic.Int64
	var wg sync.WaitGroup
	for i := range streams {
		sc := ts.Sidecar(fmt.Sprintf("a-%d", i), "a", "v1")
		wg.Go(func() {
			for j := 0; ; j++ {
				id := fmt.Sprintf("t%d-%d", i, j)
				ack, err := sc.Send(ctx, simsidecar.Begin(id, 1), simsidecar.End(id))
				if err != nil {
					return // the stream ended: Stop
				}
				if len(ack.Errors) > 0 {
					t.Errorf("stream %d, batch %d: %v", i, j, ack.Errors)
					return
				}
				acked.Add(1)
			}
		})
	}
	servertest.Eventually(t, 30*time.Second, "500 batches acknowledged", func() bool { return acked.Load() >= 500 })
	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	defer scancel()
	if err := ts.Leader().Stop(sctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("after Stop, a stream's batch was neither acknowledged nor its stream ended")
	}
	if live := ts.Leader().Live(); live != 0 {
		t.Errorf("%d transactions live after every acknowledged batch began and ended one", live)
	}
}
