package adminauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/security/identity"
)

// Config configures an Authenticator.
type Config struct {
	// TokenFile is the YAML file of hashed bearer tokens (TokenFile type);
	// empty: no tokens.
	TokenFile string
	// IdentityRolesFile is the YAML file mapping mTLS identities to roles
	// (IdentityFile type); empty: client certificates give no admin role
	// (a replica's may still forward principals). Needs ClientCerts.
	IdentityRolesFile string
	// ReplicaIdentities are the mTLS identities of replicas: the only
	// peers whose forwarded principal is accepted. Empty: the identity in
	// this replica's own serving certificate (OwnIdentity).
	ReplicaIdentities []string
	// OwnIdentity is the identity of this replica's own certificate, the
	// default of ReplicaIdentities.
	OwnIdentity string
	// ClientCerts: the listeners verify client certificates against a
	// client CA (mTLS), so a caller may authenticate by its certificate.
	// Set from the TLS configuration.
	ClientCerts bool
	// ForwardPrincipal: this replica presents its own certificate to the
	// leader when it forwards an admin call, so it passes the caller's
	// principal on (PrincipalMetadataKey). Otherwise it passes on the
	// caller's bearer token, which the leader checks against its own token
	// file.
	ForwardPrincipal bool
	// Identity reads identities from client certificates (default: SPIFFE
	// IDs, else the subject CN).
	Identity *identity.Reader
	// CheckInterval is how often, at most, the files are read again
	// (DefaultCheckInterval).
	CheckInterval time.Duration
	// SessionTTL and MaxSessions bound browser sessions
	// (DefaultSessionTTL, DefaultMaxSessions).
	SessionTTL  time.Duration
	MaxSessions int
	Logger      *slog.Logger
}

// Authenticator authenticates admin callers and checks their role.
type Authenticator struct {
	cfg        Config
	lg         *slog.Logger
	open       bool
	tokens     *reloading[tokenSet]
	identities *reloading[*identityRoles]
	replicas   []string
	ids        *identity.Reader
	sessions   *sessions
	refusals   *prometheus.CounterVec
}

// New reads the files of cfg; an error says what is wrong with them.
func New(cfg Config) (*Authenticator, error) {
	a := &Authenticator{cfg: cfg, lg: cfg.Logger, ids: cfg.Identity}
	if a.lg == nil {
		a.lg = slog.New(slog.DiscardHandler)
	}
	if a.ids == nil {
		a.ids = &identity.Reader{UseCN: true}
	}
	every := cfg.CheckInterval
	if every == 0 {
		every = DefaultCheckInterval
	}
	a.refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "coordinator_admin_auth_refusals_total",
		Help: "Admin calls refused: unauthenticated (no or bad credentials), forbidden (role too low), forged_forward (a forwarded principal from a peer that is not a replica).",
	}, []string{"reason"})
	for _, r := range []string{reasonUnauthenticated, reasonForbidden, reasonForgedForward} {
		a.refusals.WithLabelValues(r)
	}
	if cfg.IdentityRolesFile != "" && !cfg.ClientCerts {
		return nil, errors.New("adminauth: an identity roles file (--admin-identities) needs client certificates verified against a client CA")
	}
	var err error
	if cfg.TokenFile != "" {
		if a.tokens, err = newReloading(cfg.TokenFile, "token file", parseTokens, every, a.lg); err != nil {
			return nil, err
		}
	}
	if cfg.IdentityRolesFile != "" {
		if a.identities, err = newReloading(cfg.IdentityRolesFile, "admin identities file", parseIdentities, every, a.lg); err != nil {
			return nil, err
		}
	}
	for _, id := range cfg.ReplicaIdentities {
		if id = strings.TrimSpace(id); id != "" {
			a.replicas = append(a.replicas, id)
		}
	}
	if len(a.replicas) == 0 && cfg.OwnIdentity != "" {
		a.replicas = []string{cfg.OwnIdentity}
	}
	a.open = !cfg.ClientCerts && cfg.TokenFile == ""
	a.sessions = newSessions(cfg.SessionTTL, cfg.MaxSessions)
	return a, nil
}

// Open reports open mode: no client CA and no token file, every caller an
// operator.
func (a *Authenticator) Open() bool { return a.open }

// Collectors are the metrics to register.
func (a *Authenticator) Collectors() []prometheus.Collector {
	return []prometheus.Collector{a.refusals}
}

// Refusal reasons (the reason label of coordinator_admin_auth_refusals_total).
const (
	reasonUnauthenticated = "unauthenticated"
	reasonForbidden       = "forbidden"
	reasonForgedForward   = "forged_forward"
)

// Missing-credential message of Unauthenticated and 401.
const msgNoCredential = "no client certificate or bearer token; set --token or COORDCTL_TOKEN"

// openPrincipal is every caller in open mode.
var openPrincipal = Principal{Name: "anonymous", Role: Operator, Via: ViaOpen}

// byToken authenticates a bearer token.
func (a *Authenticator) byToken(tok string) (Principal, error) {
	if a.tokens == nil {
		return Principal{}, status.Error(codes.Unauthenticated, "bearer tokens are not accepted here: no token file is configured")
	}
	t, ok := a.tokens.get().match(tok)
	if !ok {
		return Principal{}, status.Error(codes.Unauthenticated, "bearer token not recognised: not in the token file (or removed from it)")
	}
	return Principal{Name: t.name, Role: t.role, Via: ViaToken}, nil
}

// identityRole is the role the identity roles file gives id.
func (a *Authenticator) identityRole(id string) Role {
	if a.identities == nil {
		return NoRole
	}
	return a.identities.get().role(id)
}

func (a *Authenticator) isReplica(id string) bool { return id != "" && slices.Contains(a.replicas, id) }

// bearer extracts the token of an "authorization: Bearer X" value.
func bearer(v string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// authenticateGRPC authenticates the caller of a public gRPC call: a
// forwarded principal from a replica, else the client certificate's
// identity (if it has a role), else the bearer token.
func (a *Authenticator) authenticateGRPC(ctx context.Context) (Principal, string, error) {
	if a.open {
		return openPrincipal, "", nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	peerID, idErr := a.ids.FromPeer(ctx)
	if fwd := md.Get(PrincipalMetadataKey); len(fwd) > 0 {
		if !a.isReplica(peerID.Name) {
			who := peerID.Name
			if who == "" {
				who = "a peer without a client certificate"
			}
			return Principal{}, "", forgedError{who: who}
		}
		if len(fwd) != 1 {
			return Principal{}, "", status.Errorf(codes.InvalidArgument, "%d %s values; want one", len(fwd), PrincipalMetadataKey)
		}
		p, err := decodePrincipal(fwd[0])
		if err != nil {
			return Principal{}, "", status.Error(codes.InvalidArgument, err.Error())
		}
		p.OriginVia, p.Via, p.ForwardedBy = p.Via, ViaForwarded, peerID.Name
		return p, "", nil
	}
	var certP *Principal
	if idErr == nil && a.cfg.ClientCerts {
		p := Principal{Name: peerID.Name, Role: a.identityRole(peerID.Name), Via: ViaMTLS}
		if p.Role > NoRole {
			return p, "", nil
		}
		certP = &p
	}
	if auth := md.Get("authorization"); len(auth) > 0 {
		tok, ok := bearer(auth[0])
		if !ok {
			return Principal{}, "", status.Error(codes.Unauthenticated, `authorization metadata is not "Bearer <token>"`)
		}
		p, err := a.byToken(tok)
		return p, tok, err
	}
	if certP != nil {
		return *certP, "", nil // no role: PermissionDenied names the identity
	}
	if idErr != nil && !errors.Is(idErr, identity.ErrNoCertificate) {
		return Principal{}, "", status.Errorf(codes.Unauthenticated, "client certificate not accepted (%v), and no bearer token; set --token or COORDCTL_TOKEN", idErr)
	}
	return Principal{}, "", status.Error(codes.Unauthenticated, msgNoCredential)
}

// forgedError is a forwarded principal from a peer that is not a replica.
type forgedError struct{ who string }

func (e forgedError) Error() string {
	return fmt.Sprintf("%s metadata is accepted from replicas only, and %s is not one", PrincipalMetadataKey, e.who)
}

func (e forgedError) GRPCStatus() *status.Status {
	return status.New(codes.PermissionDenied, e.Error())
}

// authenticateInternal authenticates a call of the REST gateway to its
// internal server: the HTTP middleware authenticated the request and the
// gateway put the principal in the metadata.
func (a *Authenticator) authenticateInternal(ctx context.Context) (Principal, string, error) {
	if a.open {
		return openPrincipal, "", nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(PrincipalMetadataKey)
	if len(vals) != 1 {
		return Principal{}, "", status.Error(codes.Unauthenticated, msgNoCredential)
	}
	p, err := decodePrincipal(vals[0])
	if err != nil {
		return Principal{}, "", status.Error(codes.Unauthenticated, err.Error())
	}
	var tok string
	if auth := md.Get("authorization"); len(auth) > 0 {
		tok, _ = bearer(auth[0])
	}
	return p, tok, nil
}

// authorize checks p's role against what method needs.
func authorize(p Principal, method string) error {
	need := RequiredRole(method)
	if p.Role >= need {
		return nil
	}
	name := strings.TrimPrefix(method, AdminPrefix)
	if p.Role == NoRole {
		return status.Errorf(codes.PermissionDenied, "%s needs the %s role; %s (via %s) has no admin role", name, need, p.Name, p.Via)
	}
	return status.Errorf(codes.PermissionDenied, "%s needs the %s role; %s (via %s) has the %s role", name, need, p.Name, p.Via, p.Role)
}

// OutgoingContext is ctx for forwarding an admin call of ctx to the
// leader: with the caller's principal (ForwardPrincipal) or bearer token
// in the outgoing metadata, and the call marked as forwarded (audited by
// the leader). Anything the caller sent of its own under those keys is
// not passed on.
func (a *Authenticator) OutgoingContext(ctx context.Context) context.Context {
	MarkForwarded(ctx)
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	md.Delete(PrincipalMetadataKey)
	md.Delete("authorization")
	if a != nil && !a.open {
		if p, ok := FromContext(ctx); ok {
			switch {
			case a.cfg.ForwardPrincipal:
				if p.Via == ViaForwarded {
					p.Via, p.OriginVia = p.OriginVia, ""
				}
				md.Set(PrincipalMetadataKey, encodePrincipal(p))
			case credentialFrom(ctx) != "":
				md.Set("authorization", "Bearer "+credentialFrom(ctx))
			}
		}
	}
	return metadata.NewOutgoingContext(ctx, md)
}
