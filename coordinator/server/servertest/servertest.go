// Package servertest starts coordinator replicas for tests, Nomad style: a
// real embedded etcd in t.TempDir(), loopback listeners on ports the kernel
// picks, tight timings, and helpers to register simulated sidecars, send
// events and read the admin API over gRPC and REST.
package servertest

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/internal/etcdgate"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/identity"
	"github.com/coordinator/coordinator/security/tlsfiles"
	"github.com/coordinator/coordinator/storage"
)

// Server is a coordinator replica on an embedded etcd in Dir.
type Server struct {
	*server.Server
	t     testing.TB
	Dir   string
	Conn  *grpc.ClientConn
	Admin pb.AdminServiceClient
	// HTTP is the client of REST, RawREST and Metric: plain, or with
	// WithTLS the same mTLS as Conn.
	HTTP *http.Client
	// ClientTLS is the TLS config of Conn and HTTP (nil: plaintext).
	ClientTLS *tls.Config
}

// WithTLS serves gRPC and HTTP with TLS from files (see server.Config.TLS:
// files.CA, if set, is the client CA), re-read every 10 ms. The harness's
// own clients (Conn, HTTP) then connect as another replica does: with
// files' certificate as client certificate, verifying the server's against
// files.CA; testca's leaves are valid as both, as replicas' must be.
//
// With a client CA, admin authentication is on (client certificates are
// verified), so the certificate's identity is given the operator role
// (an admin identities file written beside it), as an operator's would be.
func WithTLS(files tlsfiles.Files) Option {
	return func(cfg *server.Config) {
		cfg.TLS = files
		cfg.TLSCheckInterval = 10 * time.Millisecond
		if files.CA == "" || files.Cert == "" || cfg.AdminAuth.IdentityRolesFile != "" {
			return
		}
		id, err := certIdentity(files.Cert)
		if err != nil {
			panic(fmt.Sprintf("servertest.WithTLS: %v", err))
		}
		path := filepath.Join(filepath.Dir(files.Cert), "servertest-admin-identities.yaml")
		body := fmt.Sprintf("identities:\n- identity: %q\n  role: operator\n", id)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			panic(fmt.Sprintf("servertest.WithTLS: %v", err))
		}
		cfg.AdminAuth.IdentityRolesFile = path
	}
}

// certIdentity is the identity of the certificate in a PEM file: its
// SPIFFE ID, else its CN.
func certIdentity(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return "", fmt.Errorf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return "", err
	}
	id, err := (&identity.Reader{UseCN: true}).FromChain([]*x509.Certificate{c})
	return id.Name, err
}

// ClientTLS returns the config of a TLS client presenting files' certificate
// (none if files.Cert is empty) and verifying servers against files.CA.
func ClientTLS(t testing.TB, files tlsfiles.Files) *tls.Config {
	t.Helper()
	r, err := tlsfiles.New(files, tlsfiles.WithCheckInterval(10*time.Millisecond))
	if err != nil {
		t.Fatalf("client TLS files: %v", err)
	}
	return r.ClientConfig("")
}

// Dial returns a gRPC client of the replica, with TLS config c (nil:
// plaintext); it is closed at cleanup.
func (ts *Server) Dial(c *tls.Config) *grpc.ClientConn {
	ts.t.Helper()
	creds := insecure.NewCredentials()
	if c != nil {
		creds = credentials.NewTLS(c)
	}
	conn, err := grpc.NewClient(ts.GRPCAddr(), grpc.WithTransportCredentials(creds))
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { conn.Close() })
	return conn
}

// URL is the replica's HTTP listener's URL of path (https with TLS).
func (ts *Server) URL(path string) string {
	if ts.TLS() {
		return "https://" + ts.HTTPAddr() + path
	}
	return "http://" + ts.HTTPAddr() + path
}

func testLogger() *slog.Logger {
	if os.Getenv("COORDINATOR_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// Option adjusts the replica's configuration before it starts.
type Option func(*server.Config)

// Start starts a replica on dir (a fresh t.TempDir() when empty), on
// loopback ports picked by the kernel, with tight timings: 2 ms write-behind,
// sidecars heartbeating every 500 ms with one miss allowed (2 s leases).
// Set COORDINATOR_TEST_LOG=1 to see its logs.
func Start(t testing.TB, dir string, opts ...Option) *Server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := server.Config{
		GRPCAddr: "127.0.0.1:0",
		HTTPAddr: "127.0.0.1:0",
		DataDir:  dir,
		Logger:   testLogger(),
		Coordinator: coordinator.Config{
			FlushInterval:    2 * time.Millisecond,
			DefaultHeartbeat: 500 * time.Millisecond,
			DefaultMisses:    1,
			MinSessionTTL:    2 * time.Second, // sessions expire fast in tests
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := server.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	// Serve once some replica leads: this one if it is alone.
	l, err := srv.WaitLeader(ctx)
	if err != nil {
		srv.Close(ctx)
		t.Fatalf("no leader elected: %v", err)
	}
	for l.Name == srv.Self().Name && srv.Leader() == nil && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	creds, hc := insecure.NewCredentials(), http.DefaultClient
	var ctls *tls.Config
	if cfg.TLS.Cert != "" {
		ctls = ClientTLS(t, cfg.TLS)
		creds = credentials.NewTLS(ctls)
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: ctls, ForceAttemptHTTP2: true}}
	}
	conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	ts := &Server{Server: srv, t: t, Dir: dir, Conn: conn, Admin: pb.NewAdminServiceClient(conn), HTTP: hc, ClientTLS: ctls}
	t.Cleanup(ts.Stop)
	return ts
}

// Stop shuts the replica down cleanly (idempotent) and fails the test if
// that reports an error.
func (ts *Server) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ts.StopWith(ctx); err != nil {
		ts.t.Errorf("close server: %v", err)
	}
}

// StopWith shuts the replica down within ctx and returns what Close
// reported (nil if it was stopped already).
func (ts *Server) StopWith(ctx context.Context) error {
	if ts.Conn == nil {
		return nil
	}
	ts.Conn.Close()
	ts.Conn = nil
	return ts.Close(ctx)
}

// AdminClient is the admin service's client (Admin).
func (ts *Server) AdminClient() pb.AdminServiceClient { return ts.Admin }

// Sidecar registers a simulated sidecar of svc@version with deps.
func (ts *Server) Sidecar(instance, svc, version string, deps ...string) *simsidecar.Sidecar {
	ts.t.Helper()
	sc, _ := ts.Register(&pb.Register{
		InstanceId: instance, Service: svc, Version: version,
		Address: "127.0.0.1:1", Dependencies: deps,
		HeartbeatInterval: durationpb.New(500 * time.Millisecond), AllowedMisses: 1,
	})
	return sc
}

// LongSidecar registers a simulated sidecar of svc@version with deps whose
// lease lasts minutes (a one-minute heartbeat interval): for tests that send
// no heartbeats and must not see the session expire however slow the
// machine is (Sidecar's lease is 2 s).
func (ts *Server) LongSidecar(instance, svc, version string, deps ...string) *simsidecar.Sidecar {
	ts.t.Helper()
	sc, _ := ts.Register(&pb.Register{
		InstanceId: instance, Service: svc, Version: version,
		Address: "127.0.0.1:1", Dependencies: deps,
		HeartbeatInterval: durationpb.New(time.Minute), AllowedMisses: 1,
	})
	return sc
}

// Register opens a simulated sidecar stream with reg; it closes at cleanup.
func (ts *Server) Register(reg *pb.Register) (*simsidecar.Sidecar, *pb.Registered) {
	ts.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sc, r, err := simsidecar.Connect(ctx, ts.Conn, reg)
	if err != nil {
		ts.t.Fatalf("register %s: %v", reg.InstanceId, err)
	}
	ts.t.Cleanup(sc.Close)
	return sc, r
}

// Send sends one batch, waits for the Ack and fails on any event error.
func Send(t testing.TB, sc *simsidecar.Sidecar, evs ...*pb.Event) {
	t.Helper()
	ack := SendAck(t, sc, evs...)
	for _, e := range ack.Errors {
		t.Fatalf("event seq %d rejected: code %d: %s", e.Seq, e.Code, e.Message)
	}
}

// SendAck sends one batch and returns its Ack.
func SendAck(t testing.TB, sc *simsidecar.Sidecar, evs ...*pb.Event) *pb.Ack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := sc.Send(ctx, evs...)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	return ack
}

// REST GETs path on the HTTP listener and decodes the JSON body into out
// (protojson for proto messages); it returns the status code.
func (ts *Server) REST(path string, out any) int {
	ts.t.Helper()
	code, body := ts.get(path)
	if out != nil && code == http.StatusOK {
		var err error
		if m, ok := out.(proto.Message); ok {
			err = protojson.Unmarshal(body, m)
		} else {
			err = json.Unmarshal(body, out)
		}
		if err != nil {
			ts.t.Fatalf("GET %s: decode %s: %v", path, body, err)
		}
	}
	return code
}

// RawREST GETs path and returns the body whatever the status.
func (ts *Server) RawREST(path string) string {
	ts.t.Helper()
	_, body := ts.get(path)
	return string(body)
}

func (ts *Server) get(path string) (int, []byte) {
	ts.t.Helper()
	resp, err := ts.HTTP.Get(ts.URL(path))
	if err != nil {
		ts.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		ts.t.Fatalf("GET %s: read body: %v", path, err)
	}
	return resp.StatusCode, body
}

// FreeREST asks GET /v1/services/{svc}/freeness.
func (ts *Server) FreeREST(svc string) *pb.Freeness {
	ts.t.Helper()
	var f pb.Freeness
	if code := ts.REST("/v1/services/"+svc+"/freeness", &f); code != http.StatusOK {
		ts.t.Fatalf("freeness %s: HTTP %d", svc, code)
	}
	return &f
}

// Txns lists live transactions (of service, if set) over gRPC.
func (ts *Server) Txns(service string) *pb.ListTransactionsResponse {
	ts.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := ts.Admin.ListTransactions(ctx, &pb.ListTransactionsRequest{Service: service})
	if err != nil {
		ts.t.Fatalf("list transactions: %v", err)
	}
	return r
}

// Eventually polls cond until it holds or the deadline passes.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TxnID returns a trace-id-like transaction id.
func TxnID(i int) string { return fmt.Sprintf("4bf92f3577b34da6a3ce929d0e0e%04x", i) }

// Metric returns the value of an unlabelled metric (or the sum over its
// labels) from /metrics.
func (ts *Server) Metric(name string) float64 {
	ts.t.Helper()
	resp, err := ts.HTTP.Get(ts.URL("/metrics"))
	if err != nil {
		ts.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		metric, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") || (metric != name && !strings.HasPrefix(metric, name+"{")) {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			ts.t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// GateUpdateWrites wraps the replica's etcd KV so that the writes of update
// records (their phases) can be held or delayed, as a slow etcd would; *gate
// is set when the replica starts. Give it after any option that sets the
// coordinator's prefix.
func GateUpdateWrites(gate **etcdgate.KV) Option {
	return GateWrites(storage.Keys.Updates, gate)
}

// GateWrites is GateUpdateWrites for the keys under(keys) instead.
func GateWrites(under func(storage.Keys) string, gate **etcdgate.KV) Option {
	return func(c *server.Config) {
		prefix := c.Coordinator.Prefix
		if prefix == "" {
			prefix = storage.DefaultPrefix
		}
		c.WrapKV = func(kv clientv3.KV) clientv3.KV {
			*gate = etcdgate.New(kv, under(storage.Keys{Prefix: prefix}))
			return *gate
		}
	}
}
