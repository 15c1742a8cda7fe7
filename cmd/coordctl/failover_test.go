package main

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/buildinfo"
	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// deadAddr is a loopback address nothing listens on (a port the kernel
// gave and took back): connections to it are refused.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// refusingReplica is a gRPC admin server that answers GetCluster with
// Unavailable (a follower that cannot reach its leader) and GetFreeness
// with NotFound, and counts the calls.
type refusingReplica struct {
	coordinatorv1.UnimplementedAdminServiceServer
	clusterCalls, freenessCalls atomic.Int64
}

func (r *refusingReplica) GetCluster(context.Context, *coordinatorv1.GetClusterRequest) (*coordinatorv1.Cluster, error) {
	r.clusterCalls.Add(1)
	return nil, status.Error(codes.Unavailable, "fake: no leader reachable")
}

func (r *refusingReplica) GetFreeness(context.Context, *coordinatorv1.GetFreenessRequest) (*coordinatorv1.Freeness, error) {
	r.freenessCalls.Add(1)
	return nil, status.Error(codes.NotFound, `fake: unknown service "x"`)
}

func startRefusing(t *testing.T) (*refusingReplica, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &refusingReplica{}
	s := grpc.NewServer()
	coordinatorv1.RegisterAdminServiceServer(s, r)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return r, l.Addr().String()
}

// --server takes the replicas of a cluster, comma-separated: a call goes
// to them in turn, passing over one that refuses connections or answers
// Unavailable, and stops at any other answer.
func TestServerListFailover(t *testing.T) {
	ts := servertest.Start(t, "")
	live := ts.GRPCAddr()
	dead, dead2 := deadAddr(t), deadAddr(t)
	refusing, refusingAddr := startRefusing(t)

	// A replica that is down: the next one answers.
	code, out, errOut := runCLI("--server", dead+","+live, "cluster")
	if code != exitOK || !strings.Contains(out, "Answered by:  "+ts.Self().Name) {
		t.Fatalf("--server dead,live cluster: exit %d\n%s%s", code, out, errOut)
	}
	// One that answers Unavailable: the next one answers; spaces are fine.
	code, out, errOut = runCLI("--server", refusingAddr+" , "+live, "cluster")
	if code != exitOK || !strings.Contains(out, "Answered by:  "+ts.Self().Name) || refusing.clusterCalls.Load() != 1 {
		t.Fatalf("--server unavailable,live cluster: exit %d, %d calls to the first\n%s%s", code, refusing.clusterCalls.Load(), out, errOut)
	}
	// Any other answer is final, an error included: the next replica is
	// not asked (it would have said `unknown service "x"` without "fake").
	code, out, errOut = runCLI("--server", refusingAddr+","+live, "freeness", "x")
	if code != exitError || !strings.Contains(errOut, `fake: unknown service "x"`) || refusing.freenessCalls.Load() != 1 {
		t.Fatalf("--server notfound,live freeness x: exit %d\n%s%s", code, out, errOut)
	}
	// None answers: the error names every server tried.
	code, _, errOut = runCLI("--server", dead+","+dead2, "--timeout", "10s", "cluster")
	if code != exitError || !strings.Contains(errOut, "(servers "+dead+", "+dead2+")") {
		t.Fatalf("--server dead,dead cluster: exit %d\n%s", code, errOut)
	}
	// The same from the environment.
	c := &cli{stdout: &strings.Builder{}, stderr: &strings.Builder{},
		getenv: func(k string) string { return map[string]string{serverEnv: dead + "," + live}[k] }}
	root := newRootCmd(c)
	root.SetArgs([]string{"cluster", "-o", "json"})
	if err := root.Execute(); err != nil {
		t.Fatalf("%s=dead,live: %v", serverEnv, err)
	}
	var cl map[string]any
	if err := json.Unmarshal([]byte(c.stdout.(*strings.Builder).String()), &cl); err != nil || cl["answeredBy"] != ts.Self().Name {
		t.Fatalf("%s=dead,live: %v %v", serverEnv, cl, err)
	}

	// Streams (status --watch) use one connection over the list, which
	// connects to the first replica that accepts.
	c = &cli{opts: globalOptions{server: dead + "," + live, timeout: 10 * time.Second}}
	conn, err := c.dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := coordinatorv1.NewAdminServiceClient(conn).GetCluster(ctx, &coordinatorv1.GetClusterRequest{})
	if err != nil || got.GetAnsweredBy() != ts.Self().Name {
		t.Fatalf("GetCluster over dial() of dead,live: %v, %v", got, err)
	}
}

func TestVersion(t *testing.T) {
	want := "coordctl " + buildinfo.Read().String() + "\n"
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, errOut := runCLI(args...)
		if code != exitOK || out != want || errOut != "" {
			t.Errorf("coordctl %s: exit %d, %q %q; want %q", args[0], code, out, errOut, want)
		}
	}
	code, out, _ := runCLI("version", "-o", "json")
	var v versionJSON
	if err := json.Unmarshal([]byte(out), &v); code != exitOK || err != nil || v.GoVersion == "" || v.Version != buildinfo.Read().Version {
		t.Errorf("coordctl version -o json: exit %d, %v: %s", code, err, out)
	}
}
