package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
	"github.com/coordinator/coordinator/storage/embedetcd"
)

// buildBinary builds a command of this module into a temp dir.
func buildBinary(t *testing.T, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, "github.com/coordinator/coordinator/"+pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// coordinatord is a coordinatord process.
type coordinatord struct {
	cmd      *exec.Cmd
	grpcAddr string
	httpAddr string
	exited   chan error
}

// startProcess runs coordinatord alone on its etcd and waits until it serves
// and leads.
func startProcess(t *testing.T, bin string, args ...string) *coordinatord {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &coordinatord{cmd: cmd, exited: make(chan error, 1)}
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				switch line["msg"] {
				case "serving":
					p.grpcAddr, _ = line["grpc_addr"].(string)
					p.httpAddr, _ = line["http_addr"].(string)
				case "leading": // alone on its etcd, it leads once elected
					close(serving)
				}
			}
			if testing.Verbose() {
				t.Logf("coordinatord: %s", sc.Text())
			}
		}
	}()
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	select {
	case <-serving:
	case err := <-p.exited:
		t.Fatalf("coordinatord exited before serving: %v", err)
	case <-time.After(time.Minute):
		t.Fatalf("coordinatord did not serve within a minute")
	}
	return p
}

// TestSIGTERMFlushesAcknowledgedEvents runs coordinatord as a process with a
// write-behind period of an hour, so only the shutdown flush can write the
// transaction records; after SIGTERM every acknowledged transaction must be
// in etcd.
func TestSIGTERMFlushesAcknowledgedEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs coordinatord")
	}
	bin := buildBinary(t, "cmd/coordinatord")
	dir := t.TempDir()
	p := startProcess(t, bin, "--data-dir", dir, "--flush-interval", "1h")

	conn, err := grpc.NewClient(p.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sc, _, err := simsidecar.Connect(ctx, conn, &pb.Register{InstanceId: "portal-1", Service: "portal", Version: "v1", Dependencies: []string{"auth"}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	var evs []*pb.Event
	for i := range n {
		evs = append(evs, simsidecar.Begin(servertest.TxnID(i), 1), simsidecar.Call(servertest.TxnID(i), 1, "auth", 2))
	}
	servertest.Send(t, sc, evs...)

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("coordinatord exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("coordinatord did not exit within 30 s of SIGTERM")
	}

	// Open the same data dir with an embedded etcd and read the records.
	e, err := embedetcd.Start(ctx, embedetcd.Config{DataDir: filepath.Join(dir, "etcd"), ClientAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	keys := storage.Keys{Prefix: storage.DefaultPrefix}
	resp, err := cli.Get(ctx, keys.Txns(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != n {
		t.Fatalf("%d transaction records after SIGTERM, want %d", len(resp.Kvs), n)
	}
	for _, kv := range resp.Kvs {
		var rec pb.TxnRecord
		if err := proto.Unmarshal(kv.Value, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Owner != "portal-1" || len(rec.Used) != 2 || kv.Lease == 0 || !strings.HasPrefix(string(kv.Key), keys.Txns()) {
			t.Fatalf("record %s = %v (lease %d), want owner portal-1, 2 used services, on a lease", kv.Key, &rec, kv.Lease)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "etcd")); err != nil {
		t.Fatal(err)
	}
}
