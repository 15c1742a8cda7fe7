package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// recvSnapshot reads a stream until a snapshot satisfies ok, skipping
// keepalives, and fails the test after within.
func recvSnapshot(t *testing.T, recv func() (*pb.WatchStateResponse, error), within time.Duration, what string, ok func(*pb.StateSnapshot) bool) *pb.StateSnapshot {
	t.Helper()
	type got struct {
		m   *pb.WatchStateResponse
		err error
	}
	deadline := time.After(within)
	for {
		ch := make(chan got, 1)
		go func() { m, err := recv(); ch <- got{m, err} }()
		select {
		case g := <-ch:
			if g.err != nil {
				t.Fatalf("waiting for %s: %v", what, g.err)
			}
			if s := g.m.GetSnapshot(); s != nil && ok(s) {
				return s
			}
		case <-deadline:
			t.Fatalf("no snapshot with %s within %v", what, within)
		}
	}
}

func hasService(s *pb.StateSnapshot, name string) *pb.ServiceState {
	for _, st := range s.GetServices() {
		if st.GetName() == name {
			return st
		}
	}
	return nil
}

// WatchState over gRPC: a snapshot at once (with the cluster view of the
// replica that answers), then a new one, without a new request, when a
// session registers, a transaction blocks a service and an update starts.
func TestWatchStateGRPC(t *testing.T) {
	ts := servertest.Start(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := ts.Admin.WatchState(ctx, &pb.WatchStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	first := recvSnapshot(t, st.Recv, 5*time.Second, "anything", func(*pb.StateSnapshot) bool { return true })
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("first snapshot after %v", d)
	}
	if first.GetCluster().GetAnsweredBy() != ts.Self().Name || first.GetCluster().GetLeader().GetName() != ts.Self().Name {
		t.Errorf("first snapshot's cluster view: %v", first.GetCluster())
	}
	if len(first.GetServices()) != 0 || first.GetSelfPreservation() == nil {
		t.Errorf("first snapshot: %v", first)
	}

	a1 := ts.LongSidecar("a-1", "a", "v1", "b")
	ts.LongSidecar("b-1", "b", "v1")
	ts.LongSidecar("b-2", "b", "v2")
	s := recvSnapshot(t, st.Recv, 10*time.Second, "a and b with b's two versions", func(s *pb.StateSnapshot) bool {
		b := hasService(s, "b")
		return hasService(s, "a") != nil && b != nil && len(b.GetVersions()) == 2
	})
	if len(s.GetEdges()) != 1 || s.GetEdges()[0].GetFrom() != "a" || s.GetEdges()[0].GetTo() != "b" {
		t.Errorf("edges: %v", s.GetEdges())
	}

	// A transaction that used b and runs on a blocks b: the snapshot says who.
	t1 := servertest.TxnID(1)
	servertest.Send(t, a1, simsidecar.Begin(t1, 1), simsidecar.Call(t1, 1, "b", 2), simsidecar.Return(t1, 2))
	var f *pb.Freeness
	s = recvSnapshot(t, st.Recv, 10*time.Second, "b blocked by "+t1, func(s *pb.StateSnapshot) bool {
		for _, x := range s.GetBlocked() {
			if x.GetService() == "b" {
				f = x
			}
		}
		return f != nil && !hasService(s, "b").GetFree()
	})
	if len(f.GetBlockers()) != 1 || f.GetBlockers()[0].GetTxnId() != t1 || f.GetBlockers()[0].GetReason() == "" {
		t.Errorf("blockers: %v", f)
	}
	if s.GetLiveTransactions() != 1 {
		t.Errorf("live transactions: %d", s.GetLiveTransactions())
	}

	up, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "b", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_WF})
	if err != nil {
		t.Fatal(err)
	}
	recvSnapshot(t, st.Recv, 10*time.Second, "update "+up.GetId()+" waiting", func(s *pb.StateSnapshot) bool {
		return len(s.GetUpdates()) == 1 && s.GetUpdates()[0].GetId() == up.GetId() && s.GetUpdates()[0].GetPhase() == pb.Phase_PHASE_WAITING &&
			hasService(s, "b").GetUpdate().GetId() == up.GetId()
	})
	servertest.Send(t, a1, simsidecar.End(t1))
	recvSnapshot(t, st.Recv, 10*time.Second, "update "+up.GetId()+" done", func(s *pb.StateSnapshot) bool {
		b := hasService(s, "b")
		return len(s.GetUpdates()) == 1 && s.GetUpdates()[0].GetPhase() == pb.Phase_PHASE_DONE &&
			b.GetDefaultVersion() == "v2" && b.GetFree() && len(s.GetBlocked()) == 0
	})
}

// Nothing changes: the stream sends keepalives, not snapshots.
func TestWatchStateKeepalive(t *testing.T) {
	server.SetStateKeepalive(t, 300*time.Millisecond)
	ts := servertest.Start(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := ts.Admin.WatchState(ctx, &pb.WatchStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keepalives := 0
	for keepalives < 3 {
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if m.GetKeepalive() != nil {
			keepalives++
		}
	}
}

// The bounds: one watcher more than MaxStateWatchers is refused with
// ResourceExhausted (gRPC) or 429 (REST), a closed one frees its place,
// and a stream ends (OK) after StateWatchDuration.
func TestWatchStateBounds(t *testing.T) {
	ts := servertest.Start(t, "", func(cfg *server.Config) {
		cfg.MaxStateWatchers = 2
		cfg.StateWatchDuration = 3 * time.Second
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open := func(ctx context.Context) (pb.AdminService_WatchStateClient, error) {
		st, err := ts.Admin.WatchState(ctx, &pb.WatchStateRequest{})
		if err != nil {
			return nil, err
		}
		if _, err := st.Recv(); err != nil {
			return nil, err
		}
		return st, nil
	}
	c1, cancel1 := context.WithCancel(ctx)
	first, err := open(c1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = open(ctx)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "at most 2 state watches") {
		t.Fatalf("a third watcher: %v, want ResourceExhausted", err)
	}
	resp, err := ts.HTTP.Get(ts.URL("/v1/state:watch"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "at most 2 state watches") {
		t.Fatalf("a third watcher over REST: %d %s, want 429", resp.StatusCode, body)
	}
	_ = first
	cancel1()
	var opened time.Time
	var st pb.AdminService_WatchStateClient
	servertest.Eventually(t, 5*time.Second, "a place freed", func() bool {
		st, err = open(ctx)
		return err == nil
	})
	opened = time.Now()

	// The stream ends, OK, once its time is up.
	for {
		_, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the stream ended with %v, want OK", err)
		}
	}
	if d := time.Since(opened); d < 2*time.Second || d > 10*time.Second {
		t.Errorf("the stream ended after %v, want about 3s", d)
	}
}

// restLines reads a REST stream's lines (newline-delimited JSON).
func restLines(t *testing.T, resp *http.Response) func() (*pb.WatchStateResponse, error) {
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	return func() (*pb.WatchStateResponse, error) {
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			var env struct {
				Result json.RawMessage `json:"result"`
				Error  json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal([]byte(line), &env); err != nil {
				return nil, err
			}
			if env.Error != nil {
				return nil, errors.New(string(env.Error))
			}
			m := &pb.WatchStateResponse{}
			if err := protojson.Unmarshal(env.Result, m); err != nil {
				return nil, err
			}
			return m, nil
		}
		if sc.Err() != nil {
			return nil, sc.Err()
		}
		return nil, io.EOF
	}
}

// GET /v1/state:watch: the same stream as newline-delimited JSON, for a
// viewer once admin auth is on; without a credential, 401.
func TestWatchStateREST(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	toks := tokenFile(t, path, map[string]string{"vera": "viewer"})
	ts := servertest.Start(t, "", func(cfg *server.Config) { cfg.AdminAuth.TokenFile = path })

	resp, err := ts.HTTP.Get(ts.URL("/v1/state:watch"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v1/state:watch without a token: %d, want 401", resp.StatusCode)
	}
	_, err = ts.Admin.WatchState(context.Background(), &pb.WatchStateRequest{})
	if err == nil {
		st, _ := ts.Admin.WatchState(context.Background(), &pb.WatchStateRequest{})
		_, err = st.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("WatchState without a token: %v, want Unauthenticated", err)
	}

	// A viewer, over gRPC.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := ts.Admin.WatchState(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+toks["vera"]), &pb.WatchStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recvSnapshot(t, st.Recv, 5*time.Second, "a first snapshot (gRPC, viewer)", func(*pb.StateSnapshot) bool { return true })

	// A viewer, over REST.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL("/v1/state:watch"), nil)
	req.Header.Set("Authorization", "Bearer "+toks["vera"])
	resp, err = ts.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /v1/state:watch as a viewer: %d %s", resp.StatusCode, b)
	}
	recv := restLines(t, resp)
	start := time.Now()
	first := recvSnapshot(t, recv, 5*time.Second, "a first snapshot (REST)", func(*pb.StateSnapshot) bool { return true })
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("first REST snapshot after %v", d)
	}
	if first.GetCluster().GetAnsweredBy() != ts.Self().Name {
		t.Errorf("REST snapshot's cluster view: %v", first.GetCluster())
	}
	// A session registers: a new line arrives on the same response.
	ts.LongSidecar("c-1", "c", "v1")
	s := recvSnapshot(t, recv, 10*time.Second, "service c", func(s *pb.StateSnapshot) bool { return hasService(s, "c") != nil })
	if v := hasService(s, "c").GetVersions(); len(v) != 1 || v[0].GetInstances() != 1 || !v[0].GetDefault() {
		t.Errorf("c's versions: %v", v)
	}
}
