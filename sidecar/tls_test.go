package sidecar_test

import (
	"context"
	"crypto/x509"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/testca"
	"github.com/coordinator/coordinator/security/tlsfiles"
	"github.com/coordinator/coordinator/sidecar"
)

// connectWatch records the serial of the client certificate of every
// sidecar stream, and can end the streams open now (the SDK then
// reconnects).
type connectWatch struct {
	mu      sync.Mutex
	serials []*big.Int
	cancels []context.CancelFunc
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }

func (w *connectWatch) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if !strings.HasSuffix(info.FullMethod, "/Connect") {
		return h(srv, ss)
	}
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	w.mu.Lock()
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			w.serials = append(w.serials, ti.State.PeerCertificates[0].SerialNumber)
		}
	}
	w.cancels = append(w.cancels, cancel)
	w.mu.Unlock()
	return h(srv, ctxStream{ss, ctx})
}

func (w *connectWatch) dropAll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.cancels {
		c()
	}
	w.cancels = nil
}

func (w *connectWatch) last() (*big.Int, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.serials) == 0 {
		return nil, 0
	}
	return w.serials[len(w.serials)-1], len(w.serials)
}

// The SDK reaches a coordinator with TLS and a workload certificate, which
// registers it as its service (spiffe://.../sa/auth as auth); when the
// certificate files rotate, its next connection presents the new
// certificate, with no restart. A certificate of another workload is
// refused registration, and an SDK that does not trust the coordinator's CA
// does not connect.
func TestSDKOverTLSWithRotatingCertificate(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "sdk-test-ca")
	srv := ca.WriteFiles(t, dir, "server", testca.Leaf{URIs: []string{"spiffe://test.example/ns/mesh/sa/coordinator"},
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	w := &connectWatch{}
	ts := servertest.Start(t, "", servertest.WithTLS(tlsfiles.Files{Cert: srv.Cert, Key: srv.Key, CA: srv.CA}),
		func(cfg *server.Config) {
			cfg.GRPCServerOptions = append(cfg.GRPCServerOptions, grpc.ChainStreamInterceptor(w.intercept))
		})
	const authID = "spiffe://test.example/ns/shop/sa/auth"
	wdir := filepath.Join(dir, "workload")
	if err := os.MkdirAll(wdir, 0o700); err != nil {
		t.Fatal(err)
	}
	files := ca.WriteFiles(t, wdir, "auth", testca.Leaf{URIs: []string{authID}, ClientOnly: true})
	c := startClient(t, ts, sidecar.Config{InstanceID: "auth-1", Service: "auth", Version: "v1",
		TLS: tlsfiles.Files{CA: files.CA, Cert: files.Cert, Key: files.Key}})
	first, n := w.last()
	if first == nil {
		t.Fatal("no client certificate seen on the sidecar stream")
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	sessions, err := ts.Admin.ListSessions(ctx, &pb.ListSessionsRequest{})
	if err != nil || len(sessions.Sessions) != 1 || sessions.Sessions[0].Identity != authID {
		t.Fatalf("sessions %v %v, want auth-1 registered by %s", sessions, err, authID)
	}

	// Rotation: new files (same identity, a new serial) renamed over the old.
	rotated := ca.WriteFiles(t, wdir, "auth", testca.Leaf{URIs: []string{authID}, ClientOnly: true})
	cert, err := tlsfiles.New(tlsfiles.Files{Cert: rotated.Cert, Key: rotated.Key})
	if err != nil {
		t.Fatal(err)
	}
	leafCert, _ := cert.Current()
	leaf, err := x509.ParseCertificate(leafCert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	// The SDK looks at its files at most once a second: a reconnect
	// sooner than that after its last look presents the old certificate,
	// so streams are ended until a reconnect presents the new one.
	servertest.Eventually(t, within, "the SDK reconnects with the rotated certificate", func() bool {
		w.dropAll()
		servertest.Eventually(t, within, "a reconnect", func() bool { _, m := w.last(); return m > n })
		s, m := w.last()
		n = m
		return s.Cmp(leaf.SerialNumber) == 0
	})
	if st := c.Stats(); st.Rejected != 0 {
		t.Fatalf("%d events rejected across the reconnects", st.Rejected)
	}

	// Another workload's certificate may not register as auth.
	other := ca.WriteFiles(t, wdir, "billing", testca.Leaf{URIs: []string{"spiffe://test.example/ns/shop/sa/billing"}, ClientOnly: true})
	bad, err := sidecar.New(sidecar.Config{Coordinators: []string{ts.GRPCAddr()}, InstanceID: "auth-2", Service: "auth", Version: "v1",
		Address: "127.0.0.1:1", TLS: tlsfiles.Files{CA: other.CA, Cert: other.Cert, Key: other.Key}})
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	defer scancel()
	if err := bad.Start(sctx); err == nil || !strings.Contains(err.Error(), `may register as billing, not "auth"`) {
		t.Fatalf("billing's certificate registering as auth: %v, want refused", err)
	}
	_ = bad.Close(ctx)

	// An SDK that does not trust the coordinator's CA does not connect.
	otherCA := testca.New(t, "another-ca")
	odir := filepath.Join(dir, "other")
	if err := os.MkdirAll(odir, 0o700); err != nil {
		t.Fatal(err)
	}
	untrusting := otherCA.WriteFiles(t, odir, "auth", testca.Leaf{URIs: []string{authID}, ClientOnly: true})
	lost, err := sidecar.New(sidecar.Config{Coordinators: []string{ts.GRPCAddr()}, InstanceID: "auth-3", Service: "auth", Version: "v1",
		Address: "127.0.0.1:1", TLS: tlsfiles.Files{CA: untrusting.CA, Cert: files.Cert, Key: files.Key}})
	if err != nil {
		t.Fatal(err)
	}
	lctx, lcancel := context.WithTimeout(ctx, 2*time.Second)
	defer lcancel()
	if err := lost.Start(lctx); err == nil {
		t.Fatal("an SDK trusting another CA registered")
	}
	_ = lost.Close(ctx)
}
