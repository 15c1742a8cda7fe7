package coordinator_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/identity"
)

// testIdentityKey carries, in these component tests only, the identity a
// replica would have read from the stream's verified client certificate
// (coordinator/server does that; its tests use real certificates). The
// coordinator sees it exactly as it sees a certificate's: through
// identity.FromContext.
const testIdentityKey = "x-test-identity"

func identityFromMetadata(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	md, _ := metadata.FromIncomingContext(ss.Context())
	if v := md.Get(testIdentityKey); len(v) == 1 {
		id, err := spiffeid.FromString(v[0])
		if err != nil {
			return status.Error(codes.Unauthenticated, err.Error())
		}
		return h(srv, identityStream{ss, identity.NewContext(ss.Context(), identity.ID{Name: id.String(), SPIFFE: id})})
	}
	return h(srv, ss)
}

type identityStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s identityStream) Context() context.Context { return s.ctx }

// registerAs opens a stream as workload identity id and registers it.
func registerAs(t *testing.T, m *memServer, id, instance, svc string) (*simsidecar.Sidecar, error) {
	t.Helper()
	conn, err := grpc.NewClient(m.Conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(metadata.AppendToOutgoingContext(ctx, testIdentityKey, id), desc, cc, method, opts...)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sc, _, err := simsidecar.Connect(ctx, conn, &pb.Register{
		InstanceId: instance, Service: svc, Version: "v1", Address: "127.0.0.1:1",
		HeartbeatInterval: durationpb.New(500 * time.Millisecond), AllowedMisses: 1,
	})
	if err == nil {
		t.Cleanup(sc.Close)
	}
	return sc, err
}

// A sidecar registers only as a service its workload identity may
// register as (the default mapping spiffe://DOMAIN/ns/NS/sa/SERVICE ->
// SERVICE, plus the policy file's rules), and never as an instance another
// identity holds, even one whose service it may register as: each refusal
// is PermissionDenied, counted, and changes nothing, so the victim's
// transaction still blocks its service. The instance's own identity may
// register it again (a reconnect).
func TestIdentitiesRegisterOnlyAsTheirServices(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte("identities:\n- identity: spiffe://test.example/ns/shop/sa/evil\n  services: [a]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pol, err := identity.LoadPolicy(policy, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := startMemServer(t, []grpc.ServerOption{grpc.StreamInterceptor(identityFromMetadata)},
		func(c *coordinator.Config) { c.IdentityPolicy = pol })
	const idA, evil = "spiffe://test.example/ns/shop/sa/a", "spiffe://test.example/ns/shop/sa/evil"

	a, err := registerAs(t, m, idA, "a-1", "a")
	if err != nil {
		t.Fatalf("a registers as a: %v", err)
	}
	defer keepAlive(t, a)()
	T := servertest.TxnID(1)
	servertest.Send(t, a, simsidecar.Begin(T, 1))

	refused := func(reason string) float64 {
		return m.Metric(`coordinator_identity_refusals_total{reason="` + reason + `"}`)
	}
	attempts := []struct {
		what, id, instance, svc, reason, msg string
	}{
		{"a's identity registers as b", idA, "b-1", "b", "service", `may register as a, not "b"`},
		{"an identity outside the policy registers as a", "spiffe://test.example/ns/shop/sa/x", "x-1", "a", "service", `may register as x, not "a"`},
		{"a SPIFFE ID that names no service account", "spiffe://test.example/batch", "y-1", "a", "service", "may register as no service"},
		{"another identity takes over a's instance", evil, "a-1", "a", "instance", `instance "a-1" is held by another workload identity`},
	}
	for _, at := range attempts {
		before := refused(at.reason)
		_, err := registerAs(t, m, at.id, at.instance, at.svc)
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), at.msg) {
			t.Errorf("%s: %v, want PermissionDenied saying %q", at.what, err, at.msg)
		}
		if got := refused(at.reason) - before; got != 1 {
			t.Errorf("%s: identity refusals{reason=%s} rose by %v, want 1", at.what, at.reason, got)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sessions, err := m.Admin.ListSessions(ctx, &pb.ListSessionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(sessions.Sessions) != 1 || sessions.Sessions[0].InstanceId != "a-1" || sessions.Sessions[0].Identity != idA {
		t.Fatalf("sessions %v, want a-1 alone, registered by %s", sessions.Sessions, idA)
	}
	if f := m.Freeness("a"); f.Free {
		t.Fatal("a is free: the refused takeover ended the victim's transaction")
	}
	// The victim's stream still works: its transaction ends by its own END.
	if _, err := a.Heartbeat(ctx); err != nil {
		t.Fatalf("the victim's stream after the attempts: %v", err)
	}

	// The rule lets evil register as a under its own instance id.
	if _, err := registerAs(t, m, evil, "evil-1", "a"); err != nil {
		t.Fatalf("evil registers its own instance of a: %v", err)
	}
	// a's identity registers a-1 again (a reconnect): it keeps its
	// transaction, and ends it.
	a2, err := registerAs(t, m, idA, "a-1", "a")
	if err != nil {
		t.Fatalf("a-1 registers again under its own identity: %v", err)
	}
	servertest.Send(t, a2, simsidecar.End(T))
	if f := m.Freeness("a"); !f.Free {
		t.Fatalf("a not free after its own session ended the transaction: %v", f.Blockers)
	}
}
