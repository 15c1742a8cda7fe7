package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// member is one coordinatord of a three-member embedded etcd cluster.
type member struct {
	name, dataDir, etcdClient string
	grpcAddr, httpAddr        string // set when it serves
	args                      []string

	cmd     *exec.Cmd
	serving chan struct{}
	exited  chan struct{} // closed once the process exited; then waitErr is set
	mu      sync.Mutex
	waitErr error
	log     strings.Builder // stderr, for failures
}

// exitErr is the process's exit error, once exited is closed.
func (m *member) exitErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.waitErr
}

// kill kills the process unless it has exited, and waits for it.
func (m *member) kill() {
	select {
	case <-m.exited:
	default:
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
}

func (m *member) stderr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.log.String()
}

// launch starts the process without waiting for it to serve: a member of
// a new cluster only serves once a quorum of members runs.
func (m *member) launch(t *testing.T, bin string) {
	t.Helper()
	m.cmd = exec.Command(bin, append([]string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-format", "json"}, m.args...)...)
	stderr, err := m.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m.serving, m.exited = make(chan struct{}), make(chan struct{})
	m.mu.Lock()
	m.log.Reset()
	m.mu.Unlock()
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			m.mu.Lock()
			m.log.WriteString(sc.Text() + "\n")
			m.mu.Unlock()
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == "serving" {
				m.mu.Lock()
				m.grpcAddr, _ = line["grpc_addr"].(string)
				m.httpAddr, _ = line["http_addr"].(string)
				m.mu.Unlock()
				close(m.serving)
			}
		}
	}()
	cmd, exited := m.cmd, m.exited
	go func() {
		<-read // Wait closes the pipe: read it all first
		err := cmd.Wait()
		m.mu.Lock()
		m.waitErr = err
		m.mu.Unlock()
		close(exited)
	}()
	t.Cleanup(m.kill)
}

// stop sends SIGTERM and waits for a clean exit, within downBound.
func (m *member) stop(t *testing.T) {
	t.Helper()
	took := m.stopWithin(t, downBound)
	t.Logf("%s exited %v after SIGTERM", m.name, took.Round(time.Millisecond))
}

// errPortTaken reports a member that lost a picked port to someone else.
var errPortTaken = errors.New("a picked port was taken")

// waitServing waits until every member serves, or one exits.
func waitServing(members []*member) error {
	deadline := time.After(time.Minute)
	for _, m := range members {
		select {
		case <-m.serving:
		case <-m.exited:
			if strings.Contains(m.stderr(), "address already in use") {
				return fmt.Errorf("%s: %w", m.name, errPortTaken)
			}
			return fmt.Errorf("%s exited before serving: %v\n%s", m.name, m.exitErr(), m.stderr())
		case <-deadline:
			return fmt.Errorf("%s did not serve within a minute\n%s", m.name, m.stderr())
		}
	}
	return nil
}

// loopbackPorts picks n free loopback ports, all distinct.
func loopbackPorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// startThreeMembers starts three coordinatord forming one embedded etcd
// cluster, each with its own data dir, peer and etcd client port.
func startThreeMembers(t *testing.T, bin string) []*member {
	t.Helper()
	return startThreeMembersWith(t, bin, "http", nil)
}

// startThreeMembersWith is startThreeMembers with the peer URLs' scheme
// (https with peer TLS) and, if extra is set, more flags for each member
// (called once the member's name and dirs are set).
func startThreeMembersWith(t *testing.T, bin, scheme string, extra func(m *member) []string) []*member {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ports := loopbackPorts(t, 6)
		var initial []string
		for i := range 3 {
			initial = append(initial, fmt.Sprintf("n%d=%s://127.0.0.1:%d", i+1, scheme, ports[i]))
		}
		base := t.TempDir()
		members := make([]*member, 3)
		for i := range members {
			m := &member{
				name:       fmt.Sprintf("n%d", i+1),
				dataDir:    filepath.Join(base, fmt.Sprintf("n%d", i+1)),
				etcdClient: fmt.Sprintf("127.0.0.1:%d", ports[3+i]),
			}
			m.args = []string{"--data-dir", m.dataDir, "--name", m.name, "--initial-cluster", strings.Join(initial, ","),
				"--peer-addr", fmt.Sprintf("127.0.0.1:%d", ports[i]), "--etcd-client-addr", m.etcdClient}
			if extra != nil {
				m.args = append(m.args, extra(m)...)
			}
			members[i] = m
			m.launch(t, bin)
		}
		err := waitServing(members)
		if err == nil {
			return members
		}
		for _, m := range members {
			m.kill()
		}
		if attempt < 3 && errors.Is(err, errPortTaken) {
			t.Logf("attempt %d: %v; new ports", attempt, err)
			continue
		}
		t.Fatal(err)
	}
}

func etcdClient(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestThreeCoordinatordFormOneCluster runs three coordinatord processes
// with --initial-cluster: they form a three-member etcd cluster; with one
// stopped the other two serve; restarted on its data dir it rejoins.
func TestThreeCoordinatordFormOneCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three coordinatord")
	}
	bin := buildBinary(t, "cmd/coordinatord")
	begin := time.Now()
	members := startThreeMembers(t, bin)
	t.Logf("three members serving in %v", time.Since(begin).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	url := func(m *member) string { return "http://" + m.etcdClient }
	c1, c3 := etcdClient(t, url(members[0])), etcdClient(t, url(members[2]))
	ml, err := c3.MemberList(ctx)
	if err != nil || len(ml.Members) != 3 {
		t.Fatalf("MemberList = %v, %v; want 3 members", ml, err)
	}
	for _, em := range ml.Members {
		if len(em.ClientURLs) != 1 || !strings.HasPrefix(em.Name, "n") {
			t.Errorf("member %q publishes %v", em.Name, em.ClientURLs)
		}
	}
	// The replica that starts leading hands Raft leadership off its own
	// member (keepRaftElsewhere), and etcd drops proposals while a
	// transfer runs (silently for one a follower forwarded, which then
	// times out after 7 s): wait for the cluster to settle, as an operator
	// waits for a new cluster to be ready, then write once.
	coordLeader, raftLeader := settled(t, members)
	t.Logf("settled: coordinator led by %s, Raft by %s", coordLeader, raftLeader)
	if _, err := c1.Put(ctx, "cluster-test/a", "1"); err != nil {
		t.Fatalf("Put via n1: %v", err)
	}
	if resp, err := c3.Get(ctx, "cluster-test/a"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("Get via n3 = %v, %v", resp, err)
	}

	// n1 stops: n2 and n3 keep serving.
	members[0].stop(t)
	c2 := etcdClient(t, url(members[1]))
	pctx, pcancel := context.WithTimeout(ctx, downBound)
	defer pcancel()
	if _, err := c2.Put(pctx, "cluster-test/b", "2"); err != nil {
		t.Fatalf("Put via n2 with n1 down: %v", err)
	}
	if resp, err := c3.Get(ctx, "cluster-test/b"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("Get via n3 with n1 down = %v, %v", resp, err)
	}

	// n1 restarts with the same flags on its data dir: it rejoins and
	// catches up.
	members[0].launch(t, bin)
	if err := waitServing(members[:1]); err != nil {
		t.Fatalf("restart: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c1.Get(ctx, "cluster-test/b", clientv3.WithSerializable())
		if err == nil && len(resp.Kvs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted n1 did not catch up: %v, %v", resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ml, err := c1.MemberList(ctx); err != nil || len(ml.Members) != 3 {
		t.Fatalf("MemberList after rejoin = %v, %v; want 3", ml, err)
	}
}
