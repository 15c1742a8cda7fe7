package coordinator_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// TestMeshFootprint is a quick, indicative measure of what registering a
// mesh costs (not the benchmark of issue 11, bench/mesh): services in
// layers, each calling 2 to 4 services of lower layers, two sidecars per
// service, registered by 16 workers, each until it holds its first routing.
// It prints the registration time, the heap in use with the sidecars
// connected (the simulated sidecars' tables included: same process) and
// after they disconnect (the coordinator's), and the routing the sidecars
// hold. Run with COORDINATOR_MESH_FOOTPRINT=services (e.g. 200).
func TestMeshFootprint(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("COORDINATOR_MESH_FOOTPRINT"))
	if n <= 0 {
		t.Skip("set COORDINATOR_MESH_FOOTPRINT to a number of services")
	}
	ts := startMem(t)
	rng := rand.New(rand.NewPCG(1, 11))
	const layers = 5
	name := func(i int) string { return fmt.Sprintf("svc-%04d", i) }
	deps := make([][]string, n)
	per := n / layers
	for i := per; i < n; i++ { // layer 0 calls nothing
		lower := (i / per) * per
		for range 2 + rng.IntN(3) {
			d := name(rng.IntN(lower))
			deps[i] = append(deps[i], d)
		}
	}
	type reg struct {
		r *pb.Register
	}
	var regs []reg
	for i := range n {
		for k := range 2 {
			regs = append(regs, reg{&pb.Register{
				InstanceId: fmt.Sprintf("%s-%d", name(i), k), Service: name(i), Version: "v1",
				Address: fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250), Dependencies: deps[i],
				HeartbeatInterval: durationpb.New(time.Minute),
			}})
		}
	}
	rng.Shuffle(len(regs), func(i, j int) { regs[i], regs[j] = regs[j], regs[i] })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	scs := make([]*simsidecar.Sidecar, len(regs))
	work := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				sc, _, err := simsidecar.Connect(ctx, ts.Conn, regs[i].r)
				if err != nil {
					t.Error(err)
					continue
				}
				if err := sc.WaitRouting(ctx, func(*pb.Routing) bool { return true }); err != nil {
					t.Error(err)
				}
				scs[i] = sc
			}
		}()
	}
	for i := range regs {
		work <- i
	}
	close(work)
	wg.Wait()
	took := time.Since(start)
	// Let the routing settle (every change sent), then measure.
	time.Sleep(2 * time.Second)
	var routes, bytes int
	for _, sc := range scs {
		if sc != nil {
			routes += len(sc.Routing().GetServices())
			bytes += proto.Size(sc.Routing())
		}
	}
	heapWith := heapInUse()
	// Idle sessions heartbeating every second (the SDK's default) for 5 s:
	// the process's CPU, simulated sidecars' gRPC included (an upper bound
	// of the coordinator's).
	cpu0, hbStart := cpuTime(), time.Now()
	var hbs sync.WaitGroup
	for _, sc := range scs {
		if sc == nil {
			continue
		}
		hbs.Add(1)
		go func() {
			defer hbs.Done()
			time.Sleep(time.Duration(rand.IntN(1000)) * time.Millisecond)
			for time.Since(hbStart) < 5*time.Second {
				if _, err := sc.Heartbeat(ctx); err != nil {
					t.Error(err)
					return
				}
				time.Sleep(time.Second)
			}
		}()
	}
	hbs.Wait()
	hbCPU := 100 * (cpuTime() - cpu0).Seconds() / time.Since(hbStart).Seconds()
	for _, sc := range scs {
		if sc != nil {
			sc.Close()
		}
	}
	time.Sleep(time.Second)
	heapAfter := heapInUse()
	t.Logf("services=%d sidecars=%d register_s=%.2f heap_connected_mb=%.1f heap_disconnected_mb=%.1f routes_held=%d routing_bytes_held=%d hb_cpu_pct_upper=%.1f",
		n, len(regs), took.Seconds(), heapWith, heapAfter, routes, bytes, hbCPU)
}

func heapInUse() float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapInuse) / (1 << 20)
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
