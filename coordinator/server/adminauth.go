package server

import (
	"fmt"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"

	"github.com/coordinator/coordinator/security/adminauth"
)

// Admin roles (security/adminauth), wired into the replica: the
// interceptors of the public gRPC server, the REST gateway's own internal
// server that trusts the principal the HTTP middleware authenticated, the
// middleware on /v1/ and /openapi.json, and /v1/session. In open mode (no
// client CA, no token file) every caller is an operator.

// setupAdminAuth reads the token and identity files of cfg.AdminAuth,
// with what the transport (s.tr) says: whether callers present verified
// client certificates, and this replica's own identity, which it presents
// when it forwards to the leader (so it forwards the caller's principal)
// and which is the default replica identity.
func (s *Server) setupAdminAuth(cfg Config) error {
	ac := cfg.AdminAuth
	if ac.Logger == nil {
		ac.Logger = s.lg
	}
	if s.tr.verify {
		ac.ClientCerts = true
		ac.ForwardPrincipal = true
		ac.Identity = &s.tr.identity
		if ac.OwnIdentity == "" {
			id, err := s.tr.ownIdentity()
			if err != nil && len(ac.ReplicaIdentities) == 0 {
				return fmt.Errorf("server: admin auth: this replica's certificate names no identity, so the replica identities must be given (--replica-identities): %w", err)
			}
			ac.OwnIdentity = id.Name
		}
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

// adminHTTP wraps a handler of admin data (the REST gateway,
// /openapi.json) in the authentication middleware; open mode passes
// everything.
func (s *Server) adminHTTP(h http.Handler) http.Handler {
	if s.auth.Open() {
		return h
	}
	return s.auth.Middleware(h)
}
