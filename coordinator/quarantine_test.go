package coordinator_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/storage"
	"github.com/coordinator/coordinator/storage/embedetcd"
)

// A record restore cannot decode, under any prefix, does not keep a
// replica from leading: it is moved to the quarantine prefix, counted by
// kind, and /health lists it (issue 13: one such update record made every
// replica resign in a loop while /health said healthy).
func TestUndecodableRecordsAreQuarantined(t *testing.T) {
	ts := servertest.Start(t, "")
	ts.Sidecar("a-1", "a", "v1") // some good state besides
	k := storage.Keys{}
	garbage := "\xff\xff\xff\xff" // not a protobuf message, not UTF-8
	bad := map[string]string{     // key: kind
		k.Update("u-garbage"):         "update",
		k.Session("s-garbage"):        "session",
		k.Service("svc-garbage"):      "service",
		k.Route("svc-garbage"):        "route",
		k.Pins() + "svc-only":         "pin",
		k.SelfPreservation():          "selfpreservation",
		k.Txn("4bf92f3577b34da6a3ce"): "txn",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for key := range bad {
		if _, err := ts.Client().Put(ctx, key, garbage); err != nil {
			t.Fatal(err)
		}
	}
	// A new term restores from etcd: the same replica, restarted.
	dir := ts.Dir
	ts.Stop()
	ts = servertest.Start(t, dir) // fails unless it leads
	if ts.Leader() == nil {
		t.Fatal("the restarted replica does not lead")
	}
	for key, kind := range bad {
		resp, err := ts.Client().Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 0 {
			t.Errorf("%s record %q is still in place", kind, key)
		}
		q := k.Quarantined(key)
		if resp, err = ts.Client().Get(ctx, q); err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != garbage {
			t.Errorf("%s record: %q does not hold it: %v", kind, q, resp.Kvs)
		}
		if got := ts.Metric(`coordinator_quarantined_records_total{kind="` + kind + `"}`); got != 1 {
			t.Errorf("coordinator_quarantined_records_total{kind=%q} = %v, want 1", kind, got)
		}
	}
	var h server.HealthReport
	if code := ts.REST("/health", &h); code != http.StatusOK || !h.Healthy {
		t.Fatalf("/health: HTTP %d %+v, want healthy: the replica serves", code, h)
	}
	if h.Quarantine == nil || h.Quarantine.Records != int64(len(bad)) || h.Quarantine.Prefix != k.Quarantine() ||
		len(h.Quarantine.Keys) != len(bad) || !strings.Contains(strings.Join(h.Quarantine.Keys, " "), "updates/u-garbage") {
		t.Fatalf("/health quarantine: %+v, want the %d records", h.Quarantine, len(bad))
	}
	// The good state was restored: a-1's session, which the new term
	// waits for.
	if f := ts.FreeREST("a"); len(f.ResyncSessions) != 1 || f.ResyncSessions[0] != "a-1" {
		t.Fatalf("freeness of a: %v, want a-1 restored and awaited", f)
	}
}

// logBuffer is a slog handler's output, safe to read while it is written.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// With etcd stopped, /health answers 503 naming etcd within a few seconds
// and the log says so at once, on the leader and on a replica that does not
// lead.
func TestHealthWhenEtcdStops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	etcd, err := embedetcd.Start(ctx, embedetcd.Config{DataDir: t.TempDir(), ClientAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	logs := &logBuffer{}
	ts := servertest.Start(t, "", func(c *server.Config) {
		c.EtcdEndpoints = etcd.Endpoints()
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	if code := ts.REST("/health", nil); code != http.StatusOK {
		t.Fatalf("/health: HTTP %d, want 200", code)
	}
	etcd.Close()
	stopped := time.Now()
	var body string
	servertest.Eventually(t, 10*time.Second, "/health 503 naming etcd", func() bool {
		resp, err := http.Get("http://" + ts.HTTPAddr() + "/health")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var h server.HealthReport
		if json.NewDecoder(resp.Body).Decode(&h) != nil {
			return false
		}
		body = strings.Join(h.Problems, "; ")
		return resp.StatusCode == http.StatusServiceUnavailable && !h.Healthy && strings.Contains(body, "etcd: ")
	})
	t.Logf("/health 503 %v after etcd stopped: %s", time.Since(stopped).Round(time.Millisecond), body)
	if took := time.Since(stopped); took > 5*time.Second {
		t.Errorf("/health took %v to report etcd down, want <= 5s", took)
	}
	servertest.Eventually(t, 5*time.Second, "the log to say etcd is unreachable", func() bool {
		return strings.Contains(logs.String(), "etcd unreachable")
	})
	t.Logf("logged %v after etcd stopped", time.Since(stopped).Round(time.Millisecond))
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = ts.StopWith(sctx) // records may be unwritten: etcd is gone
}

// A replica that is elected but cannot start its coordinator (here: its
// restore cannot finish within the start timeout) is not healthy: /health
// answers 503 with the reason while it resigns and campaigns again.
func TestHealthWhenTheCoordinatorCannotStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := server.Start(ctx, server.Config{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: t.TempDir(),
		StartTimeout: time.Nanosecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	var h server.HealthReport
	servertest.Eventually(t, 15*time.Second, "/health 503 saying the coordinator could not start", func() bool {
		resp, err := http.Get("http://" + srv.HTTPAddr() + "/health")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		h = server.HealthReport{}
		return json.NewDecoder(resp.Body).Decode(&h) == nil && resp.StatusCode == http.StatusServiceUnavailable &&
			strings.Contains(strings.Join(h.Problems, "; "), "but the coordinator could not start: coordinator: restore:")
	})
	if h.Healthy || srv.Leader() != nil {
		t.Fatalf("health %+v while no coordinator runs", h)
	}
}
