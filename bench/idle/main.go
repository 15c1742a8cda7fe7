// Command idle measures what coordinatord costs when nothing talks to it:
// the fixed part of every idle figure (bench/mesh's hb_cpu_pct adds the
// heartbeats of its sessions to it). It builds ./cmd/coordinatord (or runs
// -bin), starts it with no flags but its addresses and a fresh data
// directory (a single embedded etcd member, as `go run ./cmd/coordinatord`
// does), waits for /health to answer 200 (it leads), lets it settle, and
// reads its CPU time from /proc over -duration. It does this -runs times,
// each on a fresh process and data directory, and prints one line a run:
//
//	idle_cpu_pct=X leader_ms=L
//
// X: the process's CPU (user and system) over the window, in percent of
// one core; L: from the process start to /health answering 200.
//
// To compare two builds, build each (`go build -o /tmp/a ./cmd/coordinatord`)
// and alternate `-bin /tmp/a` and `-bin /tmp/b` in one sitting.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/coordinator/coordinator/internal/benchproc"
)

func main() {
	bin := flag.String("bin", "", "coordinatord binary to measure (default: build ./cmd/coordinatord)")
	d := flag.Duration("duration", 20*time.Second, "measured idle time per run")
	settle := flag.Duration("settle", 3*time.Second, "wait after /health answers before measuring")
	runs := flag.Int("runs", 1, "runs, each on a fresh process and data directory")
	flag.Parse()
	log.SetFlags(0)

	dir, err := os.MkdirTemp("", "bench-idle-")
	check(err)
	defer os.RemoveAll(dir)
	if *bin == "" {
		*bin = filepath.Join(dir, "coordinatord")
		build := exec.Command("go", "build", "-o", *bin, "github.com/coordinator/coordinator/cmd/coordinatord")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		check(build.Run())
	}
	for i := range *runs {
		pct, leader := run(*bin, filepath.Join(dir, fmt.Sprintf("data-%d", i)), *settle, *d)
		fmt.Printf("idle_cpu_pct=%.2f leader_ms=%d\n", pct, leader.Milliseconds())
	}
}

// run starts bin on dataDir, waits for it to lead, and returns its CPU over
// d (percent of one core) and how long it took to lead.
func run(bin, dataDir string, settle, d time.Duration) (float64, time.Duration) {
	httpAddr := freeAddr()
	start := time.Now()
	p, err := benchproc.Exec(bin, "--data-dir", dataDir, "--grpc-addr", freeAddr(), "--http-addr", httpAddr, "--log-level", "warn")
	check(err)
	defer p.Stop()
	leader := waitHealthy(httpAddr, start)
	time.Sleep(settle)
	cpu0 := p.CPUSeconds()
	t0 := time.Now()
	time.Sleep(d)
	pct := 100 * (p.CPUSeconds() - cpu0) / time.Since(t0).Seconds()
	return pct, leader
}

// waitHealthy polls /health every 5 ms until it answers 200 (the replica
// leads and its etcd is healthy) and returns the time since start.
func waitHealthy(addr string, start time.Time) time.Duration {
	client := &http.Client{Timeout: time.Second}
	for time.Since(start) < 60*time.Second {
		resp, err := client.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	log.Fatalf("coordinatord on %s not healthy within 60s", addr)
	return 0
}

// freeAddr is benchproc.FreeAddr for this program, which stops on error.
func freeAddr() string {
	addr, err := benchproc.FreeAddr()
	check(err)
	return addr
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
