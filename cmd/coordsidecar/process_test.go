package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// buildCoordsidecar builds this command into a temp dir.
func buildCoordsidecar(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "coordsidecar")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// getBody GETs url and returns the status code and body.
func getBody(ctx context.Context, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := clientFor(1).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// coordsidecar as a process: it registers, serves /healthz and /metrics,
// and proxies; on SIGTERM it stops accepting at once, reports draining,
// lets the request in flight finish, ends the root it began for it,
// deregisters (the session is gone at once, not left to its lease) and
// exits 0.
func TestProcessDrainsAndDeregistersOnSIGTERM(t *testing.T) {
	bin := buildCoordsidecar(t)
	ts := servertest.Start(t, "")
	entered, release := make(chan struct{}, 1), make(chan struct{})
	app := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			<-release
		}
		fmt.Fprint(w, "done")
	}))
	cmd := exec.Command(bin, "--coordinator", ts.GRPCAddr(), "--service", "slow", "--version", "v1", "--app", app,
		"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--grace", "20s", "--log-format", "json")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	ready := make(chan map[string]any, 1)
	var mu sync.Mutex
	var errorLines, msgs []string
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			mu.Lock()
			msgs = append(msgs, fmt.Sprint(line["msg"]))
			if line["level"] == "ERROR" {
				errorLines = append(errorLines, sc.Text())
			}
			mu.Unlock()
			if line["msg"] == "coordsidecar ready" {
				ready <- line
			}
			if testing.Verbose() {
				t.Logf("coordsidecar: %s", sc.Text())
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var line map[string]any
	select {
	case line = <-ready:
	case err := <-exited:
		t.Fatalf("coordsidecar exited before it was ready: %v", err)
	case <-ctx.Done():
		t.Fatal("coordsidecar not ready in time")
	}
	inbound, admin, instance := line["inbound"].(string), line["admin"].(string), line["instance"].(string)

	if code, body, err := getBody(ctx, "http://"+admin+"/healthz"); err != nil || code != http.StatusOK ||
		!strings.Contains(body, `"status":"ok"`) || !strings.Contains(body, `"coordinatorConnected":true`) {
		t.Fatalf("/healthz = %d %s %v", code, body, err)
	}
	session := func() *pb.Session {
		r, err := ts.Admin.ListSessions(ctx, &pb.ListSessionsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range r.Sessions {
			if s.InstanceId == instance {
				return s
			}
		}
		return nil
	}
	if s := session(); s == nil || s.Service != "slow" || s.Version != "v1" || s.Address != inbound {
		t.Fatalf("session %v, want slow@v1 at %s", s, inbound)
	}

	type result struct {
		code int
		body string
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		code, body, err := getBody(ctx, "http://"+inbound+"/slow")
		inflight <- result{code, body, err}
	}()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the request never reached the application")
	}
	servertest.Eventually(t, within, "the request's root at the coordinator", func() bool {
		x := ts.Txns("").Transactions
		return len(x) == 1 && x[0].Owner == instance && x[0].Entry == "slow"
	})
	if _, body, err := getBody(ctx, "http://"+admin+"/metrics"); err != nil ||
		!strings.Contains(body, "coordsidecar_coordinator_connected 1") || !strings.Contains(body, `coordsidecar_inflight_requests{leg="inbound"} 1`) ||
		// The runtime as --procs and --gc-percent default it.
		!strings.Contains(body, "\ngo_sched_gomaxprocs_threads 1\n") || !strings.Contains(body, "\ngo_gc_gogc_percent 200\n") {
		t.Fatalf("/metrics: %v\n%s", err, body)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, within, "the inbound listener to close and /healthz to say draining", func() bool {
		c, err := net.DialTimeout("tcp", inbound, time.Second)
		if err == nil {
			c.Close()
			return false
		}
		code, body, err := getBody(ctx, "http://"+admin+"/healthz")
		return err == nil && code == http.StatusServiceUnavailable && strings.Contains(body, `"status":"draining"`)
	})
	select {
	case r := <-inflight:
		t.Fatalf("the request in flight ended before its application answered: %+v", r)
	case err := <-exited:
		t.Fatalf("coordsidecar exited with a request in flight: %v", err)
	default:
	}
	close(release)
	if r := <-inflight; r.err != nil || r.code != http.StatusOK || r.body != "done" {
		t.Fatalf("the request in flight: %+v, want 200 done", r)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("coordsidecar exited with %v, want status 0", err)
		}
	case <-ctx.Done():
		t.Fatal("coordsidecar did not exit")
	}
	// Deregistered (not left to its lease) and its root ended, before it
	// exited.
	if s := session(); s != nil {
		t.Fatalf("session still there after exit: %v", s)
	}
	if n := ts.Txns("").Total; n != 0 {
		t.Fatalf("%d transactions live after exit, want 0", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errorLines) > 0 {
		t.Fatalf("errors logged: %s", strings.Join(errorLines, "\n"))
	}
	if msgs[len(msgs)-1] != "stopped" {
		t.Fatalf("last log line %q, want stopped", msgs[len(msgs)-1])
	}
}

// A request still running when the grace period ends is cut; shutdown
// still deregisters, and the coordinator ends the root the request ran in.
func TestShutdownCutsRequestsAfterGrace(t *testing.T) {
	ts := servertest.Start(t, "")
	entered := make(chan struct{}, 1)
	app := serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-r.Context().Done() // until the proxy gives up on it
	}))
	cfg := defaults()
	cfg.Coordinators = []string{ts.GRPCAddr()}
	cfg.Service, cfg.Version, cfg.App = "stuck", "v1", app
	cfg.Listen, cfg.Admin = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Grace = duration(200 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	p, err := start(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	failed := make(chan error, 1)
	go func() {
		_, _, err := getBody(ctx, "http://"+p.listenerAddr("inbound")+"/")
		failed <- err
	}()
	<-entered
	servertest.Eventually(t, within, "the root at the coordinator", func() bool { return ts.Txns("").Total == 1 })
	begun := time.Now()
	if err := p.shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begun); d < 200*time.Millisecond {
		t.Fatalf("shutdown took %v, less than the grace period", d)
	}
	if err := <-failed; err == nil {
		t.Fatal("the stuck request succeeded; want it cut")
	}
	if n := ts.Txns("").Total; n != 0 {
		t.Fatalf("%d transactions live after shutdown, want 0", n)
	}
	r, err := ts.Admin.ListSessions(ctx, &pb.ListSessionsRequest{})
	if err != nil || len(r.Sessions) != 0 {
		t.Fatalf("sessions after shutdown: %v, %v", r, err)
	}
}
