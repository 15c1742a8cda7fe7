package coordinator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// longReg is a Register whose lease lasts minutes: a session whose stream
// is dropped without a Deregister lingers for the whole test.
func longReg(instance string) *pb.Register {
	return &pb.Register{InstanceId: instance, Service: "a", Version: "v1", Address: "127.0.0.1:1",
		HeartbeatInterval: durationpb.New(time.Minute), AllowedMisses: 1}
}

// connect registers reg on a stream of its own and returns the error.
func connect(t *testing.T, ts *memServer, reg *pb.Register) (*simsidecar.Sidecar, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sc, _, err := simsidecar.Connect(ctx, ts.Conn, reg)
	if err == nil {
		t.Cleanup(sc.Close)
	}
	return sc, err
}

// wantQuotaRefusal checks that err refuses a registration with
// ResourceExhausted naming flag, and that the refusal was counted.
func wantQuotaRefusal(t *testing.T, ts *memServer, err error, label, flag string, want float64) {
	t.Helper()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), flag) {
		t.Fatalf("register past %s: %v, want ResourceExhausted naming %s", label, err, flag)
	}
	if got := ts.Metric(`coordinator_quota_refusals_total{quota="` + label + `"}`); got != want {
		t.Fatalf("refusals counted under %q: %v, want %v", label, got, want)
	}
}

// Sessions are bounded in all: those whose stream dropped without a
// Deregister count until their lease expires, so a client that registers
// under new instance ids and drops its streams cannot pile them up. An
// instance that has a session may always register again (resume); a
// session that deregistered frees its place.
func TestMaxSessions(t *testing.T) {
	ts := startMem(t, func(c *coordinator.Config) { c.MaxSessions = 3 })
	var scs []*simsidecar.Sidecar
	for _, id := range []string{"a-1", "a-2", "a-3"} {
		sc, err := connect(t, ts, longReg(id))
		if err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
		scs = append(scs, sc)
	}
	scs[2].Close() // a-3 lingers: no Deregister, its lease runs
	_, err := connect(t, ts, longReg("a-4"))
	wantQuotaRefusal(t, ts, err, "sessions", "--max-sessions", 1)
	if !strings.Contains(err.Error(), "3 sessions") || !strings.Contains(err.Error(), `"a-4"`) {
		t.Fatalf("refusal %q does not say how many sessions, or which registration", err)
	}
	if _, err := connect(t, ts, longReg("a-3")); err != nil {
		t.Fatalf("a-3 registering again (its session lingers): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := scs[0].Deregister(ctx, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := connect(t, ts, longReg("a-4")); err != nil {
		t.Fatalf("a-4 after a-1 deregistered: %v", err)
	}
	if got := ts.Metric(`coordinator_quota_refusals_total{quota="sessions"}`); got != 1 {
		t.Fatalf("refusals %v, want 1", got)
	}
	if h := ts.Leader().Health(ctx); h.Sessions != 3 || h.MaxSessions != 3 || !h.Healthy {
		t.Fatalf("health %+v, want 3 sessions of at most 3, healthy", h)
	}
}

// Sessions are bounded per peer too (its address here, no identity), so
// one client cannot take every place: past the limit its new instances
// are refused, naming the peer, while its sessions may register again.
func TestMaxSessionsPerPeer(t *testing.T) {
	ts := startMem(t, func(c *coordinator.Config) { c.MaxSessionsPerPeer = 2 })
	for _, id := range []string{"a-1", "a-2"} {
		sc, err := connect(t, ts, longReg(id))
		if err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
		sc.Close() // lingering sessions count
	}
	_, err := connect(t, ts, longReg("a-3"))
	wantQuotaRefusal(t, ts, err, "peer_sessions", "--max-sessions-per-peer", 1)
	if !strings.Contains(err.Error(), "address 127.0.0.1 holds 2 sessions") {
		t.Fatalf("refusal %q does not name the peer and its sessions", err)
	}
	if _, err := connect(t, ts, longReg("a-2")); err != nil {
		t.Fatalf("a-2 registering again: %v", err)
	}
	if got := ts.Metric(`coordinator_quota_refusals_total{quota="sessions"}`); got != 0 {
		t.Fatalf("refused for the total: %v", got)
	}
}

// With workload identities, the per-peer quota counts each identity, not
// the address they share: a second identity from the same address
// registers while the first is at its limit.
func TestMaxSessionsPerPeerCountsIdentities(t *testing.T) {
	m := startMemServer(t, []grpc.ServerOption{grpc.StreamInterceptor(identityFromMetadata)},
		func(c *coordinator.Config) { c.MaxSessionsPerPeer = 1 })
	const a, b = "spiffe://example.org/ns/prod/sa/svc-a", "spiffe://example.org/ns/prod/sa/svc-b"
	if _, err := registerAs(t, m, a, "svc-a-1", "svc-a"); err != nil {
		t.Fatal(err)
	}
	_, err := registerAs(t, m, a, "svc-a-2", "svc-a")
	wantQuotaRefusal(t, m, err, "peer_sessions", "--max-sessions-per-peer", 1)
	if !strings.Contains(err.Error(), "identity "+a+" holds 1 sessions") {
		t.Fatalf("refusal %q does not name the identity", err)
	}
	if _, err := registerAs(t, m, b, "svc-b-1", "svc-b"); err != nil {
		t.Fatalf("another identity from the same address: %v", err)
	}
}
