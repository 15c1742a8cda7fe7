package server

import (
	"context"
	"fmt"
	"net"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/adminauth"
)

// Admin roles (security/adminauth), wired into the replica: the
// interceptors of the public gRPC server, the REST gateway's own internal
// server that trusts the principal the HTTP middleware authenticated, the
// middleware on /v1/ and /openapi.json, and /v1/session. In open mode (no
// client CA, no token file) the gateway keeps dialling the public gRPC
// listener as before.

// setupAdminAuth reads the token and identity files of cfg.AdminAuth.
func (s *Server) setupAdminAuth(cfg Config) error {
	ac := cfg.AdminAuth
	if ac.Logger == nil {
		ac.Logger = s.lg
	}
	a, err := adminauth.New(ac)
	if err != nil {
		return fmt.Errorf("server: admin auth: %w", err)
	}
	s.auth = a
	s.reg.MustRegister(a.Collectors()...)
	if !a.Open() {
		s.lg.Info("admin authentication on", "token_file", ac.TokenFile, "identities_file", ac.IdentityRolesFile,
			"client_certificates", ac.ClientCerts, "forward_principal", ac.ForwardPrincipal)
	}
	return nil
}

// adminServerOptions are the public gRPC server's admin interceptors.
func (s *Server) adminServerOptions() []grpc.ServerOption {
	return s.auth.ServerOptions(adminauth.Public)
}

// gatewayOptions are the REST gateway's options for admin auth.
func (s *Server) gatewayOptions() []runtime.ServeMuxOption {
	return []runtime.ServeMuxOption{adminauth.GatewayMetadata()}
}

// gatewayConn is the REST gateway's connection to an admin server. With
// authentication on, that is an in-process gRPC server of its own, which
// nothing else can reach and whose interceptors (adminauth.Internal) trust
// the principal in the metadata, after opts (the per-RPC metrics); in
// open mode, the public listener.
//
// TODO(issue 12): the in-process internal server of the TLS work replaces
// this one; it takes s.auth.ServerOptions(adminauth.Internal).
func (s *Server) gatewayConn(opts ...grpc.ServerOption) (*grpc.ClientConn, error) {
	if s.auth.Open() {
		return grpc.NewClient(s.gLis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	lis := bufconn.Listen(1 << 20)
	opts = append(append([]grpc.ServerOption{grpc.MaxRecvMsgSize(16 << 20)}, opts...), s.auth.ServerOptions(adminauth.Internal)...)
	s.gwInternal = grpc.NewServer(opts...)
	pb.RegisterAdminServiceServer(s.gwInternal, adminGate{s: s})
	go func() { _ = s.gwInternal.Serve(lis) }()
	return grpc.NewClient("passthrough:///gateway-internal",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// stopGatewayServer stops the gateway's internal server, if any.
func (s *Server) stopGatewayServer() {
	if s.gwInternal != nil {
		s.gwInternal.Stop()
		s.gwInternal = nil
	}
}

// adminHTTP wraps a handler of admin data (the REST gateway,
// /openapi.json) in the authentication middleware; open mode passes
// everything.
func (s *Server) adminHTTP(h http.Handler) http.Handler {
	if s.auth.Open() {
		return h
	}
	return s.auth.Middleware(h)
}
