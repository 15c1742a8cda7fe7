// Command proxy measures what a proxy hop costs a request, side by side in
// one run, at a fixed open-loop rate (-rate, default 1,000 requests/s):
//
//   - direct: the caller calls the callee;
//   - reverseproxy: a bare httputil.ReverseProxy per leg, each in a process
//     of its own (this binary re-executed);
//   - coordsidecar: the caller's coordsidecar (its outbound listener for the
//     callee) and the callee's (its inbound listener), each a process of
//     its own, registered with a real coordinator (a child process on its
//     embedded etcd) and sending it every transaction's events.
//
// A hop is caller -> outbound leg -> inbound leg -> callee: two proxies, as
// in Istio's figure, for coordsidecar and the bare proxy alike. Every
// request through coordsidecar is a root transaction of the caller's
// service (no mesh header: BEGIN, CALL, RETURN, END), and the callee's
// sidecar sees it as a call of that transaction.
//
// The last line is
//
//	direct_p99_us=D reverseproxy_added_p99_us=R reverseproxy_vcpu_per_1k_rps=RC added_p50_us=A added_p99_us=B vcpu_per_1k_rps=C rss_mb=M
//
// where added is the proxies' latency over the direct call (per hop), vCPU
// the CPU seconds per second of the busier of a configuration's two proxy
// processes, scaled to 1,000 requests/s from the rate achieved, and M the larger resident set of
// coordsidecar's two processes at the end.
//
// coordsidecar runs with its own defaults (--procs 1, --gc-percent 200);
// -sidecar-args adds flags to both of its processes, to compare others.
//
// -bare-one-leg also measures a single bare httputil.ReverseProxy between
// the caller and the callee and logs what it adds (the figure to set
// beside a single proxy's published ones; a hop has two).
//
// -profile-dir DIR saves a CPU profile and an allocation profile of each
// coordsidecar process over its measured time (caller.cpu.pprof,
// caller.allocs.pprof, callee.cpu.pprof, callee.allocs.pprof; coordsidecar
// runs with --pprof), for go tool pprof.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/internal/benchproc"
)

func main() {
	rate := flag.Int("rate", 1000, "requests per second, open loop")
	d := flag.Duration("duration", 10*time.Second, "measured time per configuration (after a 2s warm-up)")
	serve := flag.String("serve", "", "internal: run the coordinator on this data directory and print its gRPC address")
	rp := flag.String("reverseproxy", "", "internal: serve a bare httputil.ReverseProxy to this URL and print its address")
	scArgs := flag.String("sidecar-args", "", "extra flags for both coordsidecar processes, space-separated (for example \"--procs=2 --gc-percent=100\")")
	harnessProcs := flag.Int("harness-procs", 0, "GOMAXPROCS of this process (the load generator, the callee and the measuring client; not of its children); 0 leaves Go's default")
	oneLeg := flag.Bool("bare-one-leg", false, "also measure one bare httputil.ReverseProxy alone (one proxy, not a hop of two) and log what it adds; the last line is unchanged")
	profDir := flag.String("profile-dir", "", "save CPU and allocation profiles of the coordsidecar processes over the measured time in this directory")
	flag.Parse()
	log.SetFlags(0)
	switch {
	case *serve != "":
		runCoordinator(*serve)
		return
	case *rp != "":
		runReverseProxy(*rp)
		return
	}

	if *harnessProcs > 0 {
		runtime.GOMAXPROCS(*harnessProcs)
	}
	log.Printf("harness GOMAXPROCS=%d; coordsidecar extra flags: %q", runtime.GOMAXPROCS(0), *scArgs)
	callee := startCallee()
	defer callee.Close()
	calleeURL := "http://" + callee.Addr().String() + "/"

	direct := measure("direct", calleeURL, *rate, *d, nil)

	if *oneLeg {
		p, err := benchproc.Start("-reverseproxy", calleeURL)
		check(err)
		one := measure("one bare proxy", "http://"+p.Line+"/", *rate, *d, []*benchproc.Proc{p})
		p.Stop()
		log.Printf("one bare proxy (not a hop): added p50 %dµs, p99 %dµs", (one.p50 - direct.p50).Microseconds(), (one.p99 - direct.p99).Microseconds())
	}

	// Bare reverse proxies: outbound leg -> inbound leg -> callee.
	in, err := benchproc.Start("-reverseproxy", calleeURL)
	check(err)
	out, err := benchproc.Start("-reverseproxy", "http://"+in.Line+"/")
	check(err)
	bare := measure("reverseproxy", "http://"+out.Line+"/", *rate, *d, []*benchproc.Proc{out, in})
	out.Stop()
	in.Stop()

	// coordsidecar, with a real coordinator.
	dir, err := os.MkdirTemp("", "bench-proxy-")
	check(err)
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "coordsidecar")
	build := exec.Command("go", "build", "-o", bin, "github.com/coordinator/coordinator/cmd/coordsidecar")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	check(build.Run())
	co, err := benchproc.Start("-serve", filepath.Join(dir, "coordinator"))
	check(err)
	defer co.Stop()
	inL, inAdmin, outL, outDep, outAdmin := freeAddr(), freeAddr(), freeAddr(), freeAddr(), freeAddr()
	var extra []string
	if *profDir != "" {
		check(os.MkdirAll(*profDir, 0o755))
		extra = append(extra, "--pprof")
	}
	extra = append(extra, strings.Fields(*scArgs)...)
	calleeSC, err := benchproc.Exec(bin, append([]string{"--coordinator", co.Line, "--service", "callee", "--version", "v1",
		"--listen", inL, "--app", callee.Addr().String(), "--admin", inAdmin, "--log-level", "warn"}, extra...)...)
	check(err)
	callerSC, err := benchproc.Exec(bin, append([]string{"--coordinator", co.Line, "--service", "caller", "--version", "v1",
		"--listen", outL, "--app", "127.0.0.1:1", "--admin", outAdmin, "--dep", "callee=" + outDep, "--log-level", "warn"}, extra...)...)
	check(err)
	waitHealthy(inAdmin)
	waitHealthy(outAdmin)
	var profiles sync.WaitGroup
	if *profDir != "" {
		for name, admin := range map[string]string{"caller": outAdmin, "callee": inAdmin} {
			profiles.Go(func() { saveProfile(admin, "profile", *d, filepath.Join(*profDir, name+".cpu.pprof")) })
			profiles.Go(func() { saveProfile(admin, "allocs", *d, filepath.Join(*profDir, name+".allocs.pprof")) })
		}
	}
	sc := measure("coordsidecar", "http://"+outDep+"/", *rate, *d, []*benchproc.Proc{callerSC, calleeSC})
	profiles.Wait()
	rss := max(callerSC.RSSMB(), calleeSC.RSSMB())
	log.Printf("coordsidecar RSS: caller's %d MB, callee's %d MB", callerSC.RSSMB(), calleeSC.RSSMB())
	callerSC.StopWithin(30 * time.Second)
	calleeSC.StopWithin(30 * time.Second)

	us := func(d time.Duration) int64 { return d.Microseconds() }
	fmt.Printf("direct_p99_us=%d reverseproxy_added_p99_us=%d reverseproxy_vcpu_per_1k_rps=%.3f added_p50_us=%d added_p99_us=%d vcpu_per_1k_rps=%.3f rss_mb=%d\n",
		us(direct.p99), us(bare.p99-direct.p99), bare.per1k(),
		us(sc.p50-direct.p50), us(sc.p99-direct.p99), sc.per1k(), rss)
}

// result is one configuration's latencies and its proxies' CPU.
type result struct {
	p50, p99 time.Duration
	vcpu     float64 // CPU seconds per second of the busier proxy process
	rps      float64 // requests answered per second
}

// per1k scales a vCPU figure to 1,000 requests/s at the rate achieved.
func (r result) per1k() float64 { return r.vcpu * 1000 / r.rps }

// measure sends rate requests/s to url for a 2 s warm-up and then d,
// open loop (a request is sent on time whether or not earlier ones have
// answered), and returns the measured requests' latencies and the CPU the
// procs used meanwhile.
func measure(name, url string, rate int, d time.Duration, procs []*benchproc.Proc) result {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 1000, MaxIdleConnsPerHost: 1000, IdleConnTimeout: time.Minute}}
	send := func(deadline time.Time, keep bool) ([]time.Duration, int) {
		var mu sync.Mutex
		var lat []time.Duration
		failed := 0
		var wg sync.WaitGroup
		// Every tick sends the requests due by then: a ticker drops the
		// ticks its reader missed, and the rate would fall whenever this
		// goroutine ran late.
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		begun, sent := time.Now(), 0
		for now := range tick.C {
			if now.After(deadline) {
				break
			}
			due := int(now.Sub(begun) * time.Duration(rate) / time.Second)
			for ; sent < due; sent++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					start := time.Now()
					resp, err := client.Get(url)
					if err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if err == nil && resp.StatusCode != http.StatusOK {
							err = fmt.Errorf("HTTP %d", resp.StatusCode)
						}
					}
					el := time.Since(start)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						failed++
						return
					}
					if keep {
						lat = append(lat, el)
					}
				}()
			}
		}
		wg.Wait()
		return lat, failed
	}
	send(time.Now().Add(2*time.Second), false)
	cpu0 := make([]float64, len(procs))
	for i, p := range procs {
		cpu0[i] = p.CPUSeconds()
	}
	start := time.Now()
	lat, failed := send(start.Add(d), true)
	wall := time.Since(start).Seconds()
	var vcpu float64
	for i, p := range procs {
		c := (p.CPUSeconds() - cpu0[i]) / wall
		log.Printf("%s: proxy process %d: %.3f vCPU", name, i+1, c)
		vcpu = max(vcpu, c)
	}
	if failed > 0 {
		log.Fatalf("%s: %d requests failed", name, failed)
	}
	slices.Sort(lat)
	r := result{p50: lat[len(lat)/2], p99: lat[len(lat)*99/100], vcpu: vcpu, rps: float64(len(lat)) / wall}
	log.Printf("%s: %d requests in %.1fs (%.0f/s): p50 %v p99 %v", name, len(lat), wall, r.rps, r.p50, r.p99)
	if r.rps < 0.9*float64(rate) {
		log.Printf("%s: WARNING: %.0f requests/s, below 90%% of -rate %d: the machine could not keep up; figures are scaled to the rate achieved", name, r.rps, rate)
	}
	return r
}

// startCallee serves a small fixed answer, as a service's handler would.
func startCallee() net.Listener {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	body := []byte(`{"ok":true,"service":"callee"}`)
	go func() {
		_ = http.Serve(lis, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		}))
	}()
	return lis
}

// runReverseProxy is a child: a bare httputil.ReverseProxy to target on a
// loopback port, until SIGTERM.
func runReverseProxy(target string) {
	u, err := url.Parse(target)
	check(err)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = &http.Transport{MaxIdleConns: 1000, MaxIdleConnsPerHost: 1000, IdleConnTimeout: time.Minute}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	fmt.Println(lis.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := &http.Server{Handler: rp}
	go func() { _ = srv.Serve(lis) }()
	<-ctx.Done()
	_ = srv.Close()
}

// runCoordinator is a child: a coordinator as coordinatord runs one, on
// loopback with its embedded etcd, until SIGTERM.
func runCoordinator(dir string) {
	benchproc.Serve(server.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: dir}, nil)
}

// freeAddr is benchproc.FreeAddr for this program, which stops on error
// (coordsidecar's listeners are given as flags).
func freeAddr() string {
	addr, err := benchproc.FreeAddr()
	check(err)
	return addr
}

// waitHealthy waits for a coordsidecar's /healthz to answer 200: it is
// registered and has its routes.
func waitHealthy(admin string) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + admin + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Fatalf("coordsidecar %s not healthy within 30s", admin)
}

// saveProfile saves to file a profile of the coordsidecar whose admin
// listener is admin (kind "profile": CPU; "allocs": what was allocated),
// over d after the 2 s warm-up.
func saveProfile(admin, kind string, d time.Duration, file string) {
	time.Sleep(2 * time.Second)
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/%s?seconds=%d", admin, kind, int(d.Seconds())))
	check(err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		log.Fatalf("profile of %s: HTTP %d", admin, resp.StatusCode)
	}
	f, err := os.Create(file)
	check(err)
	_, err = io.Copy(f, resp.Body)
	check(err)
	check(f.Close())
	log.Printf("CPU profile saved to %s", file)
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
