package coordinator_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/ratelog"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A sidecar that makes the coordinator log a line per event (here: a call
// over an undeclared edge, 500 times) gets a bounded number of lines.
func TestClientCausedLogsAreBounded(t *testing.T) {
	var buf lockedBuffer
	ts := servertest.Start(t, "", func(c *server.Config) {
		c.Coordinator.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	sc, _ := ts.Register(&pb.Register{InstanceId: "p-1", Service: "portal", Version: "v1"})
	defer sc.Close()
	for i := range 500 {
		txn := servertest.TxnID(i)
		servertest.Send(t, sc, simsidecar.Begin(txn, 1), simsidecar.Call(txn, 1, fmt.Sprintf("svc-%d", i), 2))
	}
	n := strings.Count(buf.String(), "learned undeclared static edge")
	if n == 0 || n >= 500 || n > ratelog.DefaultBurst+ratelog.DefaultPerSecond*60 {
		t.Fatalf("%d lines for 500 learned edges, want between 1 and the rate limit", n)
	}
	t.Logf("%d of 500 lines logged", n)
}
