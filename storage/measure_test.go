package storage

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

func TestMeasurePuts(t *testing.T) {
	_, cli := startEtcd(t)
	ctx := testCtx(t, 30*time.Second)
	for _, clients := range []int{1, 8} {
		rate, err := MeasurePuts(ctx, cli, "/bench/", clients, 200*time.Millisecond)
		if err != nil {
			t.Fatalf("MeasurePuts(%d clients): %v", clients, err)
		}
		if rate <= 0 {
			t.Fatalf("MeasurePuts(%d clients) = %v puts/s", clients, rate)
		}
		t.Logf("%d clients: %.0f puts/s", clients, rate)
	}
	resp, err := cli.Get(ctx, "/bench/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("%v keys left under /bench/ (%v), want none", resp.Count, err)
	}
	if _, err := MeasurePuts(ctx, cli, "", 1, time.Millisecond); err == nil {
		t.Fatalf("MeasurePuts with an empty prefix must refuse (it deletes the prefix)")
	}
}

// BenchmarkPuts measures raw etcd puts/s against an embedded etcd with 1,
// 16 and 256 concurrent clients, 2 s each; see MeasurePuts. ns/op is
// meaningless here: read puts/s.
//
//	go test -run '^$' -bench Puts ./storage/
func BenchmarkPuts(b *testing.B) {
	_, cli := startEtcd(b)
	for _, clients := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			var rate float64
			for b.Loop() {
				var err error
				rate, err = MeasurePuts(context.Background(), cli, "/bench/", clients, 2*time.Second)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(rate, "puts/s")
		})
	}
}

// BenchmarkWriteBehind measures what one WriteBehind commits: ops/s with
// one transaction of MaxOps ops in flight, the source always full.
//
//	go test -run '^$' -bench WriteBehind ./storage/
func BenchmarkWriteBehind(b *testing.B) {
	_, cli := startEtcd(b)
	for _, maxOps := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("maxops=%d", maxOps), func(b *testing.B) {
			value := string(make([]byte, 128))
			var rate float64
			for b.Loop() {
				n := 0
				deadline := time.Now().Add(2 * time.Second)
				collect := func(max int) []Op {
					if time.Now().After(deadline) {
						return nil
					}
					ops := make([]Op, max)
					for i := range ops {
						ops[i] = rawPut(fmt.Sprintf("/wbbench/%05d", (n+i)%10000), value, NoLease)
					}
					n += max
					return ops
				}
				w := NewWriteBehind(testStore(cli), WriteBehindConfig{MaxOps: maxOps, Collect: collect, Logger: testLogger()})
				start := time.Now()
				if err := w.Flush(context.Background()); err != nil {
					b.Fatal(err)
				}
				rate = float64(w.Stats().Ops) / time.Since(start).Seconds()
				if _, err := cli.Delete(context.Background(), "/wbbench/", clientv3.WithPrefix()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(rate, "ops/s")
		})
	}
}
