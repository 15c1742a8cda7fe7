package integration

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// lines collects what a process prints, line by line, for a test to wait on.
type lines struct {
	mu    sync.Mutex
	all   []string
	more  chan struct{} // closed and replaced on each new line
	ended bool
}

func readLines(r io.Reader) *lines {
	l := &lines{more: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.all = append(l.all, sc.Text())
			close(l.more)
			l.more = make(chan struct{})
			l.mu.Unlock()
		}
		l.mu.Lock()
		l.ended = true
		close(l.more)
		l.mu.Unlock()
	}()
	return l
}

func (l *lines) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

// await returns the first line from index from on that re matches, with
// its index, and fails the test if none comes within d.
func (l *lines) await(t *testing.T, from int, re *regexp.Regexp, d time.Duration, what string) ([]string, int) {
	t.Helper()
	deadline := time.After(d)
	for i := from; ; {
		l.mu.Lock()
		for ; i < len(l.all); i++ {
			if m := re.FindStringSubmatch(l.all[i]); m != nil {
				l.mu.Unlock()
				return m, i
			}
		}
		more, ended := l.more, l.ended
		l.mu.Unlock()
		if ended {
			t.Fatalf("the demo's output ended before %s:\n%s", what, l.text())
		}
		select {
		case <-more:
		case <-deadline:
			t.Fatalf("no %s within %s:\n%s", what, d, l.text())
		}
	}
}

// TestAuthDemoNoUpdate drives the demo as an operator would: the demo runs
// with --no-update against a coordinator, prints where everything listens,
// and coordctl updates auth-service under its load and rolls it back; on
// SIGINT the demo's last line counts requests, no failure, no violation and
// both updates.
func TestAuthDemoNoUpdate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo and coordctl")
	}
	demoBin := buildBinary(t, "examples/authdemo")
	ctlBin := buildBinary(t, "cmd/coordctl")
	ts := servertest.Start(t, "")

	demo := exec.Command(demoBin, "--coordinator", ts.GRPCAddr(), "--no-update", "--report-every", "200ms", "--concurrency", "8")
	stdout, err := demo.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	demo.Stderr = &stderr
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- demo.Wait() }()
	defer func() {
		if demo.ProcessState == nil {
			_ = demo.Process.Kill()
			<-exited
		}
	}()
	out := readLines(stdout)

	// The addresses: the coordinator's, then each instance's, up to the
	// line about the load.
	m, _ := out.await(t, 0, regexp.MustCompile(`^Coordinator: (\S+) `), 30*time.Second, "coordinator address")
	if m[1] != ts.GRPCAddr() {
		t.Fatalf("demo prints coordinator %s, want %s", m[1], ts.GRPCAddr())
	}
	m, _ = out.await(t, 0, regexp.MustCompile(`^Coordinator HTTP: http://(\S+)/ `), time.Second, "coordinator HTTP address")
	if m[1] != ts.HTTPAddr() {
		t.Fatalf("demo prints coordinator HTTP %s, want %s (asked with GetCluster)", m[1], ts.HTTPAddr())
	}
	_, loadAt := out.await(t, 0, regexp.MustCompile(`^Load: `), 5*time.Second, "load line")
	instance := regexp.MustCompile(`^\s+(\S+)\s+(v\d)\s+http://(\S+)/\s+(\S+)$`)
	printed := map[string]string{} // instance id -> address
	for _, line := range strings.Split(out.text(), "\n")[:loadAt] {
		if m := instance.FindStringSubmatch(line); m != nil {
			printed[m[4]] = m[3]
			// Each printed address serves: a request to an instance is
			// answered by its HTTP server (404 for a path it does not know).
			resp, err := http.Get("http://" + m[3] + "/nosuch")
			if err != nil {
				t.Fatalf("printed address of %s@%s: %v", m[1], m[2], err)
			}
			resp.Body.Close()
		}
	}
	if len(printed) != 5 {
		t.Fatalf("demo prints %d instances, want 5 (portal, proc, db, auth-service v1 and v2):\n%s", len(printed), out.text())
	}
	// They are the instances registered with the coordinator, at those
	// addresses.
	sessions, err := ts.Admin.ListSessions(context.Background(), &pb.ListSessionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	registered := map[string]string{}
	for _, s := range sessions.GetSessions() {
		registered[s.GetInstanceId()] = s.GetAddress()
	}
	for id, addr := range printed {
		if registered[id] != addr {
			t.Fatalf("printed instance %s at %s; the coordinator has it at %q", id, addr, registered[id])
		}
	}

	summary := regexp.MustCompile(`^\[\s*\S+\] requests=(\d+) .*served v1=\+(\d+) v2=\+(\d+), default (v\d)$`)
	// Load runs on v1 before any update.
	m, i := out.await(t, loadAt, summary, 30*time.Second, "summary line")
	for m[1] == "0" || m[2] == "0" {
		m, i = out.await(t, i+1, summary, 30*time.Second, "summary with requests")
	}

	ctl := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(ctlBin, append([]string{"--server", ts.GRPCAddr()}, args...)...)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("coordctl %s: %v\n%s\ndemo:\n%s", strings.Join(args, " "), err, b, out.text())
		}
		return string(b)
	}
	if o := ctl("update", "auth-service", "--strategy=cv", "--watch"); !strings.Contains(o, "v1 -> v2 (cv)") || !strings.Contains(o, ": DONE after") {
		t.Fatalf("coordctl update --watch:\n%s", o)
	}
	// The demo sees it: a summary (taken after the update) with v2 the
	// default and serving.
	for m[4] != "v2" || m[3] == "0" {
		m, i = out.await(t, i+1, summary, 30*time.Second, "summary with auth-service on v2")
	}
	if o := ctl("rollback", "auth-service"); !strings.Contains(o, "Rolling back auth-service from v2 back to v1") {
		t.Fatalf("coordctl rollback:\n%s", o)
	}
	for m[4] != "v1" || m[2] == "0" {
		m, i = out.await(t, i+1, summary, 30*time.Second, "summary with auth-service back on v1")
	}

	if err := demo.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("demo exits with %v after SIGINT\n%s\n%s", err, out.text(), stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("demo still runs a minute after SIGINT:\n%s", out.text())
	}
	final := regexp.MustCompile(`^mode=no-update requests=(\d+) failed=(\d+) violations=(\d+) updates=(\d+) p99_ms=[\d.]+$`)
	m, _ = out.await(t, i, final, 10*time.Second, "last line")
	if n, _ := strconv.Atoi(m[1]); n == 0 || m[2] != "0" || m[3] != "0" || m[4] != "2" {
		t.Fatalf("last line %q: want requests > 0, failed=0, violations=0, updates=2\n%s\n%s", m[0], out.text(), stderr.String())
	}
	if all := strings.Split(strings.TrimSpace(out.text()), "\n"); all[len(all)-1] != m[0] {
		t.Fatalf("the summary is not the last line:\n%s", out.text())
	}
	// Its instances deregistered on the way out.
	servertest.Eventually(t, 10*time.Second, "the demo's sessions to end", func() bool {
		s, err := ts.Admin.ListSessions(context.Background(), &pb.ListSessionsRequest{})
		return err == nil && len(s.GetSessions()) == 0
	})
}

// TestAuthDemoAlreadyAtTarget runs the demo twice against one coordinator:
// the first run updates auth-service to v2; the second finds v2 already the
// default and updates it back to v1 instead of dying.
func TestAuthDemoAlreadyAtTarget(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo")
	}
	bin := buildBinary(t, "examples/authdemo")
	ts := servertest.Start(t, "")
	line := regexp.MustCompile(`(?m)^strategy=cv requests=(\d+) failed=(\d+) violations=(\d+) update_ms=\d+ p99_ms=[\d.]+$`)
	for _, to := range []string{"v2", "v1"} {
		out, err := exec.Command(bin, "--coordinator", ts.GRPCAddr(), "--duration=2s", "--update-after=500ms").CombinedOutput()
		if err != nil {
			t.Fatalf("authdemo (to %s): %v\n%s", to, err, out)
		}
		if !strings.Contains(string(out), "of auth-service to "+to+" (cv): DONE") {
			t.Fatalf("authdemo did not update auth-service to %s:\n%s", to, out)
		}
		m := line.FindStringSubmatch(string(out))
		if m == nil || m[1] == "0" || m[2] != "0" || m[3] != "0" {
			t.Fatalf("authdemo (to %s): want requests > 0, failed=0, violations=0:\n%s", to, out)
		}
		s, err := ts.Admin.GetService(context.Background(), &pb.GetServiceRequest{Service: "auth-service"})
		if err != nil || s.GetDefaultVersion() != to {
			t.Fatalf("after the demo auth-service runs %q (%v), want %s", s.GetDefaultVersion(), err, to)
		}
	}
}
