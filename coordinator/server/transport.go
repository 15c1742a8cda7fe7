package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/identity"
	"github.com/coordinator/coordinator/security/tlsfiles"
)

// Transport security of a replica's own listeners (issue 12).
//
// With Config.TLS.Cert set, the gRPC listener (sidecars, coordctl) and the
// HTTP listener (REST, /health, /metrics, the web view) speak TLS with the
// certificate of one tlsfiles.Reloader: a rotated certificate is used by
// the next handshake, connections already open keep theirs. With
// Config.TLS.CA (the client CA, --client-ca) as well, a client that
// presents a certificate must present one that CA issued, valid now
// (tls.VerifyClientCertIfGiven): operators may authenticate otherwise
// (tokens, above TLS) and probes present nothing, so /health and /metrics
// need no certificate, while the sidecar stream refuses a client without
// one (sidecarGate.authenticate).
//
// Replicas talk to each other as clients of the same listeners: a follower
// forwards admin calls to the leader over mTLS, presenting its own
// certificate (so a replica's certificate must be valid as a client
// certificate too: extended key usage clientAuth as well as serverAuth)
// and verifying the leader's against the client CA bundle (so the
// replicas' certificates must be issued by a CA in --client-ca). Without
// a client CA the leader's certificate is verified against the system
// roots.

// transport is what Start derived from Config.TLS and Config.Identity.
type transport struct {
	files    *tlsfiles.Reloader // nil: plaintext
	server   *tls.Config        // the listeners' (nil: plaintext)
	verify   bool               // a client CA is configured: sidecars must present a certificate
	identity identity.Reader    // reads sidecars' identities (Roots: the client CA)
}

func newTransport(cfg Config, opts ...tlsfiles.Option) (*transport, error) {
	t := &transport{identity: cfg.Identity}
	if cfg.TLS.Empty() {
		return t, nil
	}
	if cfg.TLS.Cert == "" {
		return nil, errors.New("server: a client CA (TLS.CA, --client-ca) needs a server certificate (--tls-cert and --tls-key)")
	}
	r, err := tlsfiles.New(cfg.TLS, opts...)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	auth := tlsfiles.NoClientCert
	if r.HasCA() {
		auth = tlsfiles.VerifyIfGiven
		t.verify = true
		t.identity.Roots = r.CACertificates
	}
	if t.server, err = r.ServerConfig(auth); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	t.files = r
	return t, nil
}

// ownIdentity is the identity of this replica's own certificate, read as a
// client's would be.
func (t *transport) ownIdentity() (identity.ID, error) {
	cert, _ := t.files.Current()
	if cert == nil || len(cert.Certificate) == 0 {
		return identity.ID{}, identity.ErrNoCertificate
	}
	chain := make([]*x509.Certificate, 0, len(cert.Certificate))
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return identity.ID{}, err
		}
		chain = append(chain, c)
	}
	r := t.identity
	r.Roots = nil // its own certificate: no second verification
	return r.FromChain(chain)
}

// serverOption gives the gRPC listener its TLS credentials (none: plaintext).
func (t *transport) serverOption() []grpc.ServerOption {
	if t.server == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(t.server))}
}

// dialCreds are the credentials with which this replica dials another
// replica's gRPC listener (the leader, to forward admin calls): mTLS with
// this replica's certificate, the peer verified against the client CA.
func (t *transport) dialCreds() credentials.TransportCredentials {
	if t.files == nil {
		return insecure.NewCredentials()
	}
	return credentials.NewTLS(t.files.ClientConfig(""))
}

// TLSFiles is the replica's certificate reloader (nil without TLS): tests
// read the certificate in use from it.
func (s *Server) TLSFiles() *tlsfiles.Reloader { return s.tr.files }

// TLS reports whether the replica's listeners speak TLS.
func (s *Server) TLS() bool { return s.tr.server != nil }

// newSidecarAuthRefusals counts sidecar streams refused for their client
// certificate, by reason.
func newSidecarAuthRefusals() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "coordinator", Name: "sidecar_auth_refusals_total",
		Help: "Sidecar streams refused for their client certificate (a client CA is configured): no_certificate, no_identity or untrusted."},
		[]string{"reason"})
}

// identityStream is a sidecar stream whose context carries the sidecar's
// identity (identity.FromContext).
type identityStream struct {
	pb.SidecarService_ConnectServer
	ctx context.Context
}

func (s identityStream) Context() context.Context { return s.ctx }

// authenticate reads the identity of the sidecar on srv from its verified
// client certificate and returns srv with it in its context. Without a
// client CA, srv is returned as is (no identity: loopback or a mesh that
// authenticates elsewhere). With one, a stream whose client presented no
// certificate, or one that names no identity or an untrusted SPIFFE ID,
// is refused with Unauthenticated saying what is missing.
func (s *Server) authenticate(srv pb.SidecarService_ConnectServer) (pb.SidecarService_ConnectServer, error) {
	if !s.tr.verify {
		return srv, nil
	}
	id, err := s.tr.identity.FromPeer(srv.Context())
	if err == nil {
		return identityStream{srv, identity.NewContext(srv.Context(), id)}, nil
	}
	var reason, msg string
	switch {
	case errors.Is(err, identity.ErrNoCertificate):
		reason = "no_certificate"
		msg = "the sidecar stream needs a client certificate issued by the coordinator's client CA (--client-ca), and this connection presented none: give the sidecar its certificate and key"
	case errors.Is(err, identity.ErrNoIdentity):
		reason = "no_identity"
		msg = "the client certificate names no identity: it has no SPIFFE ID (URI SAN)"
		if s.tr.identity.UseCN {
			msg += " and no subject CN"
		} else {
			msg += " (subject CNs are read only with --tls-identity-from cn)"
		}
	default:
		reason = "untrusted"
		msg = "the client certificate's identity is not accepted: " + err.Error()
	}
	s.metrics.authRefusals.WithLabelValues(reason).Inc()
	s.lg.Debug("sidecar stream refused", "reason", reason, "peer", peerHost(srv.Context()), "error", err)
	return nil, status.Error(codes.Unauthenticated, msg)
}

// The REST gateway calls the admin service in process: a second gRPC
// server, the gateway server, listens on an in-memory listener that only
// the gateway's client connection dials; it serves the admin gate and
// nothing else (no sidecar stream, no health, no reflection). The gateway
// is therefore not a network client of the replica's own gRPC listener:
// it needs no certificate of its own, and no client on the network can
// reach the gateway server. A call the gateway server handles came through
// the HTTP listener and the gateway, always: Config.GatewayServerOptions
// (interceptors) may trust the metadata the gateway attaches
// (Config.GatewayMuxOptions, e.g. runtime.WithMetadata carrying the HTTP
// caller's principal) as the HTTP caller's, since no one else can send it.

// gatewayBufSize is the in-memory listener's buffer per direction.
const gatewayBufSize = 1 << 20

// startGatewayServer starts the gateway server on an in-memory listener
// and returns the gateway's client connection to it.
func (s *Server) startGatewayServer(opts []grpc.ServerOption) (*grpc.ClientConn, error) {
	lis := bufconn.Listen(gatewayBufSize)
	s.gwSrv = grpc.NewServer(append([]grpc.ServerOption{grpc.MaxRecvMsgSize(16 << 20)}, opts...)...)
	pb.RegisterAdminServiceServer(s.gwSrv, adminGate{s: s})
	go func() { _ = s.gwSrv.Serve(lis) }() // ends with Stop; never on its own
	// passthrough: the target is not resolved; every connection is dialled
	// over lis.
	return grpc.NewClient("passthrough:///coordinator-gateway",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// startHealthListener serves /health, /metrics and grpc.health.v1 in
// plaintext on addr, for Kubernetes probes and scrapers that present no
// client certificate (and may not speak TLS at all): HTTP/1.1 and
// HTTP/2 without TLS (prior knowledge, as gRPC clients speak it) on one
// port. Nothing else is served there.
func (s *Server) startHealthListener(addr string, metrics http.Handler) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("server: health listen: %w", err)
	}
	s.healthLis = lis
	s.healthGRPC = grpc.NewServer()
	healthpb.RegisterHealthServer(s.healthGRPC, s.healthSrv)
	mux := http.NewServeMux()
	mux.HandleFunc("/health", s.health)
	mux.Handle("/metrics", metrics)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && isGRPC(r) {
			s.healthGRPC.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	s.healthHTTP = &http.Server{Handler: h, Protocols: &protos, ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10, ErrorLog: slog.NewLogLogger(s.lg.Handler(), slog.LevelDebug)}
	go func() { s.done <- s.healthHTTP.Serve(lis) }()
	return nil
}

func isGRPC(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	return ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;")
}

// HealthAddr is the bound address of the plaintext health listener ("" without one).
func (s *Server) HealthAddr() string {
	if s.healthLis == nil {
		return ""
	}
	return s.healthLis.Addr().String()
}
