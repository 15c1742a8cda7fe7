package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// MeasurePuts measures raw etcd write throughput: clients goroutines each
// put 128-byte values in a loop, one put at a time (cycling over 16 keys
// of their own under prefix), for d; it returns puts per second over all
// clients, then deletes every key under prefix. All goroutines share cli
// (one gRPC connection, as the coordinator does).
func MeasurePuts(ctx context.Context, cli *clientv3.Client, prefix string, clients int, d time.Duration) (float64, error) {
	if prefix == "" {
		return 0, errors.New("storage: MeasurePuts needs a non-empty prefix (its keys are deleted)")
	}
	clients = max(clients, 1)
	value := strings.Repeat("x", 128)
	var (
		total    atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for c := range clients {
		wg.Go(func() {
			for n := 0; time.Now().Before(deadline); n++ {
				key := fmt.Sprintf("%s%05d/%02d", prefix, c, n%16)
				if _, err := cli.Put(ctx, key, value); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				total.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, derr := cli.Delete(cctx, prefix, clientv3.WithPrefix())
	rate := float64(total.Load()) / elapsed.Seconds()
	if err := errors.Join(firstErr, derr); err != nil {
		return rate, fmt.Errorf("storage: measure puts: %w", err)
	}
	return rate, nil
}
