package server_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/adminauth"
	"github.com/coordinator/coordinator/security/identity"
	"github.com/coordinator/coordinator/security/testca"
	"github.com/coordinator/coordinator/security/tlsfiles"
)

// replicaID is the SPIFFE ID of the replicas' certificate in these tests.
const replicaID = "spiffe://example.org/ns/coordinator/sa/coordinator"

// pki is a CA and a replica certificate it issued (valid for serving on
// loopback and as a client, with a SPIFFE ID: the harness's sidecars
// present it), in dir.
type pki struct {
	ca     *testca.CA
	dir    string
	server tlsfiles.Files
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{ca: testca.New(t, "coordinator-ca"), dir: t.TempDir()}
	p.server = p.writeServer(t)
	return p
}

// tls are the options of a replica serving TLS with p's certificate and
// client CA, whose identity policy lets the replica's certificate (which
// the harness's own sidecars present) register as any service.
func (p *pki) tls(t *testing.T) []servertest.Option {
	t.Helper()
	path := filepath.Join(p.dir, "policy.yaml")
	if err := os.WriteFile(path, []byte("identities:\n- identity: "+replicaID+"\n  services: [\"*\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pol, err := identity.LoadPolicy(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return []servertest.Option{servertest.WithTLS(p.server), func(cfg *server.Config) { cfg.Coordinator.IdentityPolicy = pol }}
}

// writeServer (re)issues the replica certificate, as a rotation does.
func (p *pki) writeServer(t *testing.T) tlsfiles.Files {
	t.Helper()
	f := p.ca.WriteFiles(t, p.dir, "server", testca.Leaf{CommonName: "coordinator", URIs: []string{replicaID},
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}})
	return tlsfiles.Files{Cert: f.Cert, Key: f.Key, CA: f.CA}
}

// client issues a client certificate of ca into its own directory and
// returns its files, trusting trustCA (a path).
func client(t *testing.T, ca *testca.CA, name string, l testca.Leaf, trustCA string) tlsfiles.Files {
	t.Helper()
	l.ClientOnly = true
	f := ca.WriteFiles(t, t.TempDir(), name, l)
	return tlsfiles.Files{Cert: f.Cert, Key: f.Key, CA: trustCA}
}

// caOnly trusts caPath and presents no certificate.
func caOnly(caPath string) tlsfiles.Files { return tlsfiles.Files{CA: caPath} }

func httpsClient(c *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: c, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
}

func getStatus(t *testing.T, hc *http.Client, url string) (int, string, error) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// peerSerial calls GetCluster on a new connection with c and returns the
// serial number of the certificate the server presented.
func peerSerial(t *testing.T, ts *servertest.Server, c *tls.Config) (*big.Int, error) {
	t.Helper()
	conn, err := grpc.NewClient(ts.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(c)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err := pb.NewAdminServiceClient(conn).GetCluster(ctx, &pb.GetClusterRequest{}, grpc.Peer(&p)); err != nil {
		return nil, err
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		t.Fatalf("no TLS peer certificate: %#v", p.AuthInfo)
	}
	return ti.State.PeerCertificates[0].SerialNumber, nil
}

func register(instance, svc string) *pb.Register {
	return &pb.Register{InstanceId: instance, Service: svc, Version: "v1", Address: "127.0.0.1:1",
		HeartbeatInterval: durationpb.New(time.Minute), AllowedMisses: 1}
}

// connectSidecar opens a sidecar stream over a new connection with c.
func connectSidecar(t *testing.T, ts *servertest.Server, c *tls.Config, reg *pb.Register) (*simsidecar.Sidecar, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sc, _, err := simsidecar.Connect(ctx, ts.Dial(c), reg)
	if err == nil {
		t.Cleanup(sc.Close)
	}
	return sc, err
}

// registerStatus opens a sidecar stream over a new connection with c,
// sends reg and returns how the server answered: nil for Registered, else
// the stream's status (a Send to a stream the server already ended gives
// io.EOF; the status is in the Recv that follows).
func registerStatus(t *testing.T, ts *servertest.Server, c *tls.Config, reg *pb.Register) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := pb.NewSidecarServiceClient(ts.Dial(c)).Connect(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Register{Register: reg}}); err != nil && err != io.EOF {
		return err
	}
	m, err := st.Recv()
	if err != nil {
		return err
	}
	if m.GetRegistered() == nil {
		return fmt.Errorf("answered %v, not Registered", m)
	}
	return nil
}

// gRPC and HTTPS handshakes work for a client that trusts the CA, with a
// client certificate or without (VerifyIfGiven); they fail for a client
// that trusts another CA, one whose certificate another CA issued, and one
// whose certificate has expired. REST works over HTTPS through the
// in-process gateway.
func TestTLSHandshakes(t *testing.T) {
	p := newPKI(t)
	ts := servertest.Start(t, "", p.tls(t)...)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if !ts.TLS() {
		t.Fatal("TLS() is false with Config.TLS set")
	}

	other := testca.New(t, "other-ca")
	otherCA := filepath.Join(t.TempDir(), "other-ca.crt")
	other.WriteCA(t, otherCA)
	good := client(t, p.ca, "operator", testca.Leaf{CommonName: "operator"}, p.server.CA)
	for _, tc := range []struct {
		name  string
		files tlsfiles.Files
		ok    bool
	}{
		{"client certificate of the CA", good, true},
		{"no client certificate", caOnly(p.server.CA), true},
		{"trusts another CA", caOnly(otherCA), false},
		{"client certificate of another CA", client(t, other, "intruder", testca.Leaf{CommonName: "intruder"}, p.server.CA), false},
		{"expired client certificate", client(t, p.ca, "expired", testca.Leaf{CommonName: "expired",
			NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}, p.server.CA), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The handshake is what is tested: grpc.health.v1 and /health
			// need no admin credential (client certificates are verified,
			// so admin authentication is on, and this CN names no role).
			c := servertest.ClientTLS(t, tc.files)
			_, err := healthpb.NewHealthClient(ts.Dial(c)).Check(ctx, &healthpb.HealthCheckRequest{})
			if tc.ok && err != nil {
				t.Errorf("gRPC: %v", err)
			}
			if !tc.ok && status.Code(err) != codes.Unavailable {
				t.Errorf("gRPC: %v, want a failed handshake (Unavailable)", err)
			}
			code, body, err := getStatus(t, httpsClient(c), ts.URL("/health"))
			if tc.ok && (err != nil || code != http.StatusOK || !strings.Contains(body, "healthy")) {
				t.Errorf("/health over HTTPS: %d %q %v", code, body, err)
			}
			if !tc.ok && err == nil {
				t.Errorf("HTTPS with %s: HTTP %d, want a failed handshake", tc.name, code)
			}
		})
	}

	// Plaintext clients get nothing from a TLS listener.
	plain := pb.NewAdminServiceClient(ts.Dial(nil))
	if _, err := plain.GetCluster(ctx, &pb.GetClusterRequest{}); err == nil {
		t.Error("a plaintext gRPC client was answered by the TLS listener")
	}
	if code, _, err := getStatus(t, http.DefaultClient, "http://"+ts.HTTPAddr()+"/health"); err == nil && code == http.StatusOK {
		t.Error("a plaintext HTTP client was answered 200 by the TLS listener")
	}

	// REST through the gateway: an update started over HTTPS reaches the
	// coordinator (and its gRPC view), with the harness's own mTLS client.
	ts.LongSidecar("a-1", "a", "v1")
	ts.LongSidecar("a-2", "a", "v2")
	var svc pb.ServiceState
	if code := ts.REST("/v1/services/a", &svc); code != http.StatusOK || svc.GetName() != "a" {
		t.Fatalf("GET /v1/services/a over HTTPS: %d %v", code, &svc)
	}
	resp, err := ts.HTTP.Post(ts.URL("/v1/services/a/updates"), "application/json", strings.NewReader(`{"toVersion":"v2","strategy":"cv"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST update over HTTPS: %d %s", resp.StatusCode, body)
	}
	ups, err := ts.Admin.ListUpdates(ctx, &pb.ListUpdatesRequest{Service: "a"})
	if err != nil || len(ups.GetUpdates()) != 1 {
		t.Fatalf("the update started over REST: %v, %v", ups, err)
	}
}

// /health and /metrics answer on the TLS port without a client
// certificate, and on --health-addr in plaintext, HTTP and gRPC health;
// the REST API is not served on the health listener.
func TestHealthWithoutClientCertificate(t *testing.T) {
	p := newPKI(t)
	ts := servertest.Start(t, "", servertest.WithTLS(p.server), func(cfg *server.Config) { cfg.HealthAddr = "127.0.0.1:0" })
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	anon := httpsClient(servertest.ClientTLS(t, caOnly(p.server.CA)))
	for _, path := range []string{"/health", "/metrics"} {
		if code, body, err := getStatus(t, anon, ts.URL(path)); err != nil || code != http.StatusOK {
			t.Errorf("GET %s over TLS without a client certificate: %d %v %.200s", path, code, err, body)
		}
	}
	if ts.HealthAddr() == "" {
		t.Fatal("no health listener")
	}
	base := "http://" + ts.HealthAddr()
	if code, body, err := getStatus(t, http.DefaultClient, base+"/health"); err != nil || code != http.StatusOK || !strings.Contains(body, `"role":"leader"`) {
		t.Errorf("plaintext /health: %d %v %s", code, err, body)
	}
	if code, body, err := getStatus(t, http.DefaultClient, base+"/metrics"); err != nil || code != http.StatusOK || !strings.Contains(body, "coordinator_is_leader 1") {
		t.Errorf("plaintext /metrics: %d %v %.300s", code, err, body)
	}
	if code, _, err := getStatus(t, http.DefaultClient, base+"/v1/services"); err != nil || code != http.StatusNotFound {
		t.Errorf("plaintext /v1/services on the health listener: %d %v, want 404", code, err)
	}
	conn, err := grpc.NewClient(ts.HealthAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	servertest.Eventually(t, within, "gRPC health SERVING on the health listener", func() bool {
		r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "coordinator.v1.SidecarService"})
	if err != nil || r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health of SidecarService: %v %v", r, err)
	}
	// Nothing but health there: the admin service is not.
	if _, err := pb.NewAdminServiceClient(conn).GetCluster(ctx, &pb.GetClusterRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("GetCluster on the health listener: %v, want Unimplemented", err)
	}
}

// With a client CA the sidecar stream needs a client certificate that
// names a trusted identity; the identity reaches the context the
// coordinator serves the stream with. Refusals say what is missing and are
// counted by reason.
func TestSidecarStreamIdentity(t *testing.T) {
	p := newPKI(t)
	var mu sync.Mutex
	seen := map[string]identity.ID{} // by the identity's name
	ts := servertest.Start(t, "", servertest.WithTLS(p.server),
		func(cfg *server.Config) { cfg.Identity.TrustDomain = "example.org" })
	server.SetConnectHook(ts.Server, func(ctx context.Context) {
		if id, ok := identity.FromContext(ctx); ok {
			mu.Lock()
			seen[id.Name] = id
			mu.Unlock()
		}
	})
	for _, tc := range []struct {
		name   string
		files  tlsfiles.Files
		code   codes.Code
		msg    string
		reason string
	}{
		{"no client certificate", caOnly(p.server.CA), codes.Unauthenticated, "needs a client certificate", "no_certificate"},
		{"no identity", client(t, p.ca, "anon", testca.Leaf{DNSNames: []string{"anon.example"}}, p.server.CA),
			codes.Unauthenticated, "names no identity", "no_identity"},
		{"a CN without --tls-identity-from cn", client(t, p.ca, "cn", testca.Leaf{CommonName: "auth", DNSNames: []string{"x"}}, p.server.CA),
			codes.Unauthenticated, "--tls-identity-from cn", "no_identity"},
		{"another trust domain", client(t, p.ca, "evil", testca.Leaf{URIs: []string{"spiffe://evil.example/ns/shop/sa/auth"}}, p.server.CA),
			codes.Unauthenticated, `not of trust domain "example.org"`, "untrusted"},
		{"a SPIFFE ID of the trust domain", client(t, p.ca, "auth", testca.Leaf{URIs: []string{"spiffe://example.org/ns/shop/sa/auth"}}, p.server.CA),
			codes.OK, "", ""},
		// The coordinator reads the identity from the stream's context: its
		// policy (the default mapping) refuses auth as another service.
		{"a SPIFFE ID registering as another service", client(t, p.ca, "auth2", testca.Leaf{URIs: []string{"spiffe://example.org/ns/shop/sa/auth"}}, p.server.CA),
			codes.PermissionDenied, "spiffe://example.org/ns/shop/sa/auth may register as auth", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := ts.Metric("coordinator_sidecar_auth_refusals_total")
			svc := "auth"
			if tc.code == codes.PermissionDenied {
				svc = "billing"
			}
			err := registerStatus(t, ts, servertest.ClientTLS(t, tc.files), register("i-"+strings.ReplaceAll(tc.name, " ", "-"), svc))
			if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("Connect: %v, want %v with %q", err, tc.code, tc.msg)
			}
			refused := ts.Metric("coordinator_sidecar_auth_refusals_total") - before
			if want := map[bool]float64{true: 1, false: 0}[tc.reason != ""]; refused != want {
				t.Errorf("refusals counted: %v, want %v", refused, want)
			}
			if tc.reason != "" && !strings.Contains(ts.RawREST("/metrics"), `coordinator_sidecar_auth_refusals_total{reason="`+tc.reason+`"}`) {
				t.Errorf("no refusal with reason %s in /metrics", tc.reason)
			}
		})
	}
	mu.Lock()
	id, ok := seen["spiffe://example.org/ns/shop/sa/auth"]
	mu.Unlock()
	if !ok || id.SPIFFE.TrustDomain().Name() != "example.org" || identity.DefaultService(id) != "auth" {
		t.Fatalf("identities the coordinator's stream context carried: %v", seen)
	}
	sessions, err := ts.Admin.ListSessions(context.Background(), &pb.ListSessionsRequest{})
	if err != nil || len(sessions.GetSessions()) != 1 || sessions.GetSessions()[0].GetService() != "auth" {
		t.Fatalf("sessions: %v %v, want the one authenticated sidecar", sessions, err)
	}
}

// With Identity.UseCN a certificate without a SPIFFE ID is named by its CN.
func TestSidecarIdentityFromCN(t *testing.T) {
	p := newPKI(t)
	ids := make(chan identity.ID, 1)
	ts := servertest.Start(t, "", servertest.WithTLS(p.server), func(cfg *server.Config) { cfg.Identity.UseCN = true })
	server.SetConnectHook(ts.Server, func(ctx context.Context) {
		id, _ := identity.FromContext(ctx)
		ids <- id
	})
	c := client(t, p.ca, "billing", testca.Leaf{CommonName: "billing", DNSNames: []string{"billing.example"}}, p.server.CA)
	if _, err := connectSidecar(t, ts, servertest.ClientTLS(t, c), register("b-1", "billing")); err != nil {
		t.Fatal(err)
	}
	if id := <-ids; id.Name != "billing" || !id.SPIFFE.IsZero() {
		t.Fatalf("identity %+v, want the CN billing", id)
	}
}

// Without a client CA (TLS for the server only) the stream needs no client
// certificate and carries no identity.
func TestServerTLSWithoutClientCA(t *testing.T) {
	p := newPKI(t)
	files := p.server
	files.CA = ""
	// The harness's own clients cannot verify the server without a CA: unused here.
	ts := servertest.Start(t, "", func(cfg *server.Config) { cfg.TLS = files })
	ids := make(chan bool, 1)
	server.SetConnectHook(ts.Server, func(ctx context.Context) { _, ok := identity.FromContext(ctx); ids <- ok })
	if _, err := connectSidecar(t, ts, servertest.ClientTLS(t, caOnly(p.server.CA)), register("x-1", "x")); err != nil {
		t.Fatalf("a sidecar without a client certificate, no client CA: %v", err)
	}
	if <-ids {
		t.Error("an identity without a client CA")
	}
}

// A rotated server certificate is presented on new connections (a new
// serial number) without a restart, while a sidecar stream opened before
// the rotation keeps working.
func TestServerCertificateRotation(t *testing.T) {
	p := newPKI(t)
	ts := servertest.Start(t, "", p.tls(t)...)
	c := servertest.ClientTLS(t, p.server)
	first, err := peerSerial(t, ts, c)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := connectSidecar(t, ts, c, register("r-1", "r"))
	if err != nil {
		t.Fatal(err)
	}
	reloads := ts.TLSFiles().Reloads()

	p.writeServer(t) // a new leaf, renamed over the old files
	var now *big.Int
	servertest.Eventually(t, within, "a new connection to see the new certificate", func() bool {
		now, err = peerSerial(t, ts, c)
		return err == nil && now.Cmp(first) != 0
	})
	if ts.TLSFiles().Reloads() <= reloads {
		t.Errorf("reloads %d, want more than %d", ts.TLSFiles().Reloads(), reloads)
	}
	cert, _ := ts.TLSFiles().Current()
	if cert.Leaf == nil || cert.Leaf.SerialNumber.Cmp(now) != 0 {
		t.Errorf("the reloader's certificate is not the one presented (%v)", now)
	}
	// The stream opened on the old certificate still works.
	servertest.Send(t, sc, simsidecar.Begin(servertest.TxnID(1), 1), simsidecar.End(servertest.TxnID(1)))
	hctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sc.Heartbeat(hctx); err != nil {
		t.Fatalf("heartbeat on the stream opened before the rotation: %v", err)
	}
	// So does the harness's connection opened before it.
	if _, err := ts.Admin.GetCluster(hctx, &pb.GetClusterRequest{}); err != nil {
		t.Fatal(err)
	}
}

// A follower forwards admin calls, gRPC and REST, to the leader over mTLS:
// the leader sees the call come with a verified client certificate, the
// follower's.
func TestFollowerForwardsOverMTLS(t *testing.T) {
	p := newPKI(t)
	var mu sync.Mutex
	var callers []string // identities of ListSessions calls, as each replica's server saw them
	reader := identity.Reader{}
	record := func(cfg *server.Config) {
		cfg.GRPCServerOptions = append(cfg.GRPCServerOptions, grpc.ChainUnaryInterceptor(
			func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				if strings.HasSuffix(info.FullMethod, "/ListSessions") {
					name := "anonymous"
					if id, err := reader.FromPeer(ctx); err == nil {
						name = id.Name
					}
					mu.Lock()
					callers = append(callers, cfg.ReplicaName+"<-"+name)
					mu.Unlock()
				}
				return h(ctx, req)
			}))
	}
	n := 0
	named := func(cfg *server.Config) { n++; cfg.ReplicaName = "r" + string(rune('0'+n)) }
	// An operator's bearer token: the caller on the follower has no
	// client certificate.
	tokens := filepath.Join(p.dir, "tokens.yaml")
	const tok = "operator-token-of-the-forward-test"
	if err := os.WriteFile(tokens, []byte("tokens:\n- name: otto\n  role: operator\n  sha256: "+adminauth.HashToken(tok)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withTokens := func(cfg *server.Config) { cfg.AdminAuth.TokenFile = tokens }
	cl := servertest.StartCluster(t, 2, append(p.tls(t), named, record, withTokens)...)
	leader := cl.Leader(within)
	f := cl.Follower(leader)
	leader.LongSidecar("a-1", "a", "v1")
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()

	// gRPC from an operator without a client certificate (with a token),
	// on the follower.
	conn, err := grpc.NewClient(f.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(servertest.ClientTLS(t, caOnly(p.server.CA)))),
		adminauth.WithToken(tok))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	anon := pb.NewAdminServiceClient(conn)
	got, err := anon.ListSessions(ctx, &pb.ListSessionsRequest{})
	if err != nil || len(got.GetSessions()) != 1 || got.GetSessions()[0].GetInstanceId() != "a-1" {
		t.Fatalf("ListSessions on the follower: %v %v, want the leader's session", got, err)
	}
	// REST over HTTPS on the follower: gateway, then forwarded.
	var rs pb.ListSessionsResponse
	if code := f.REST("/v1/sessions", &rs); code != http.StatusOK || len(rs.GetSessions()) != 1 {
		t.Fatalf("GET /v1/sessions on the follower: %d %v", code, &rs)
	}
	mu.Lock()
	defer mu.Unlock()
	fwd := leader.Self().Name + "<-" + replicaID
	want := []string{f.Self().Name + "<-anonymous", fwd, fwd} // the gateway's call does not cross the follower's listener
	if strings.Join(callers, " ") != strings.Join(want, " ") {
		t.Fatalf("ListSessions calls seen (server<-caller): %v, want %v", callers, want)
	}
}
