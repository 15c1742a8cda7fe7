// Command failover measures a leader failover under load: three replicas
// run as processes (this program re-executed), each with an embedded etcd
// member of one 3-member cluster; simulated services on the Go SDK run
// transactions while svc-d is updated from v1 to v2 with CV; the update is
// held in DRAINING by a transaction that used v1; the leader process is
// killed with SIGKILL. It prints the time from the kill to a new leader
// serving sidecar streams, to every session resynced, and to the
// interrupted update finishing, and the requests, failures and
// version-inconsistent transactions, ending with exactly:
//
//	new_leader_ms=A resynced_ms=B update_done_ms=C requests=N failed=F violations=V
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/internal/loadsim"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

var graph = loadsim.Graph{"svc-a": {"svc-b", "svc-c"}, "svc-b": {"svc-d", "svc-e"}, "svc-c": {"svc-d"}, "svc-d": {"svc-f"}}

var instances = []string{"svc-a@v1", "svc-b@v1", "svc-c@v1", "svc-d@v1", "svc-e@v1", "svc-f@v1", "svc-d@v2"}

func main() {
	replica := flag.String("replica", "", "internal: run one replica with this JSON configuration")
	rate := flag.Int("rate", 200, "transactions per second")
	maxMS := flag.Int("max-ms", 50, "longest transaction budget, ms (each is 1 to max-ms)")
	warm := flag.Duration("warmup", 2*time.Second, "load before the update and the kill")
	flag.Parse()
	log.SetFlags(0)
	if *replica != "" {
		runReplica(*replica)
		return
	}
	fmt.Println(run(*rate, *maxMS, *warm))
}

// replicaConfig is what the parent passes a replica process.
type replicaConfig struct {
	Name, InitialCluster, PeerAddr, EtcdClientAddr, GRPCAddr, HTTPAddr, DataDir string
}

func runReplica(js string) {
	var rc replicaConfig
	if err := json.Unmarshal([]byte(js), &rc); err != nil {
		log.Fatal(err)
	}
	debug.SetGCPercent(server.GCPercent()) // as coordinatord
	defer server.StartGCHeadroom(server.DefaultGCHeadroom)()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	level := slog.LevelWarn
	if os.Getenv("BENCH_REPLICA_LOG") != "" { // to see the replicas' logs
		level = slog.LevelInfo
	}
	lg := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	srv, err := server.Start(ctx, server.Config{Name: rc.Name, InitialCluster: rc.InitialCluster, PeerAddr: rc.PeerAddr,
		EtcdClientAddr: rc.EtcdClientAddr, GRPCAddr: rc.GRPCAddr, HTTPAddr: rc.HTTPAddr, DataDir: rc.DataDir, Logger: lg})
	if err != nil {
		log.Fatalf("replica %s: %v", rc.Name, err)
	}
	fmt.Println("serving")
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Close(cctx)
}

// freePorts returns n loopback ports free now.
func freePorts(n int) []int {
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		check(err)
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

type proc struct {
	rc  replicaConfig
	cmd *exec.Cmd
}

func run(rate, maxMS int, warm time.Duration) string {
	dir, err := os.MkdirTemp("", "bench-failover-")
	check(err)
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	check(err)
	ports := freePorts(12)
	var members []string
	for i := range 3 {
		members = append(members, fmt.Sprintf("n%d=http://127.0.0.1:%d", i+1, ports[i*4]))
	}
	var procs []*proc
	defer func() {
		for _, p := range procs { // all at once: no takeover between them
			if p.cmd.ProcessState == nil {
				_ = p.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
		for _, p := range procs {
			if p.cmd.ProcessState == nil {
				_ = p.cmd.Wait()
			}
		}
	}()
	for i := range 3 {
		rc := replicaConfig{Name: fmt.Sprintf("n%d", i+1), InitialCluster: strings.Join(members, ","),
			PeerAddr: fmt.Sprintf("127.0.0.1:%d", ports[i*4]), EtcdClientAddr: fmt.Sprintf("127.0.0.1:%d", ports[i*4+1]),
			GRPCAddr: fmt.Sprintf("127.0.0.1:%d", ports[i*4+2]), HTTPAddr: fmt.Sprintf("127.0.0.1:%d", ports[i*4+3]),
			DataDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1))}
		js, _ := json.Marshal(rc)
		cmd := exec.Command(self, "-replica", string(js))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		check(err)
		check(cmd.Start())
		procs = append(procs, &proc{rc: rc, cmd: cmd})
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	leader := waitLeader(ctx, procs, nil)
	log.Printf("cluster up, %s leads", leader.rc.Name)

	var addrs []string
	for _, p := range procs {
		addrs = append(addrs, p.rc.GRPCAddr)
	}
	sim, err := loadsim.Start(ctx, loadsim.Config{Coordinators: addrs, Graph: graph, Instances: instances, Entry: "svc-a"})
	check(err)
	defer sim.Close()
	stop := sim.Load(ctx, rate, maxMS)
	defer stop()
	time.Sleep(warm)

	// A transaction that used svc-d@v1 and may call it again holds the
	// update in DRAINING across the kill; it ends right after the kill,
	// its End reaching the new leader.
	c := sim.Client("svc-c@v1")
	tctx, _ := c.Begin(ctx)
	call, err := c.Route(tctx, "svc-d")
	check(err)
	call.Finish()

	var other *proc
	for _, p := range procs {
		if p != leader {
			other = p
			break
		}
	}
	conn, err := grpc.NewClient(other.rc.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	check(err)
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)
	u, err := admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "svc-d", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV})
	check(err)
	for {
		g, err := admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		check(err)
		if g.Phase == pb.Phase_PHASE_DRAINING {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // load in DRAINING

	killed := time.Now()
	check(leader.cmd.Process.Signal(syscall.SIGKILL))
	_ = leader.cmd.Wait()
	check(c.End(tctx))
	next := waitLeader(ctx, procs, leader)
	newLeader := time.Since(killed)
	log.Printf("%s leads %v after the kill", next.rc.Name, newLeader.Round(time.Millisecond))

	conn2, err := grpc.NewClient(next.rc.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	check(err)
	defer conn2.Close()
	admin = pb.NewAdminServiceClient(conn2)
	var resynced, done time.Duration
	for resynced == 0 || done == 0 {
		if resynced == 0 {
			if l, err := admin.ListSessions(ctx, &pb.ListSessionsRequest{}); err == nil {
				n := 0
				for _, s := range l.Sessions {
					if s.Connected {
						n++
					}
				}
				if n == len(instances) {
					resynced = time.Since(killed)
				}
			}
		}
		if done == 0 {
			if g, err := admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id}); err == nil && g.FinishedAt != nil && g.Progress == nil {
				done = time.Since(killed)
				if g.Phase != pb.Phase_PHASE_DONE {
					log.Printf("update ended %s: %s", g.Phase, g.Reason)
					done = -time.Millisecond
				}
			}
		}
		if ctx.Err() != nil {
			log.Fatal("timed out waiting for resync and the update")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // load after the update
	stop()
	log.Printf("sessions resynced %v after the kill, update DONE %v after it; longest transaction %v",
		resynced.Round(time.Millisecond), done.Round(time.Millisecond), sim.Longest().Round(time.Millisecond))
	if err := sim.FirstError(); err != nil {
		log.Printf("first failure: %v", err)
	}
	return fmt.Sprintf("new_leader_ms=%d resynced_ms=%d update_done_ms=%d requests=%d failed=%d violations=%d",
		newLeader.Milliseconds(), resynced.Milliseconds(), done.Milliseconds(), sim.Requests(), sim.Failed(), sim.Violations())
}

// waitLeader polls the replicas' /health (all but dead) until one leads.
func waitLeader(ctx context.Context, procs []*proc, dead *proc) *proc {
	hc := &http.Client{Timeout: 500 * time.Millisecond}
	for ctx.Err() == nil {
		for _, p := range procs {
			if p == dead {
				continue
			}
			resp, err := hc.Get("http://" + p.rc.HTTPAddr + "/health")
			if err != nil {
				continue
			}
			var h server.HealthReport
			err = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if err == nil && h.Role == "leader" {
				return p
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	log.Fatal("no leader")
	return nil
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
