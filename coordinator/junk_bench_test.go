package coordinator_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// BenchmarkJunkBatch sends batches of 1,000 ENDs of transactions that do
// not exist (bench/abuse's flood, within its rate) and waits for each Ack:
// the cost of rejecting them, in the coordinator and in the Ack (past the
// first 16, they share one error for the run).
func BenchmarkJunkBatch(b *testing.B) {
	m := startMem(b)
	sc := m.Sidecar("hostile-1", "hostile", "v1")
	ctx := context.Background()
	b.ReportAllocs()
	for i := range b.N {
		evs := make([]*pb.Event, 0, 1000)
		for j := range 1000 {
			evs = append(evs, simsidecar.End(fmt.Sprintf("junk-%d-%d", i, j)))
		}
		if _, err := sc.Send(ctx, evs...); err != nil {
			b.Fatal(err)
		}
	}
}
