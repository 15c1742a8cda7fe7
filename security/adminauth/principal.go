package adminauth

import (
	"context"
	"fmt"
	"net/url"
)

// How a principal was authenticated (Principal.Via).
const (
	ViaMTLS      = "mtls"      // a verified client certificate's identity
	ViaToken     = "token"     // a bearer token of the token file
	ViaCookie    = "cookie"    // a browser session bought with a token
	ViaForwarded = "forwarded" // named by a follower replica, authenticated by mTLS as a replica
	ViaOpen      = "open"      // no authentication configured: everyone is an operator
)

// Principal is an authenticated admin caller.
type Principal struct {
	// Name is the token's name, the certificate's identity, or "anonymous"
	// in open mode.
	Name string
	Role Role
	Via  string
	// ForwardedBy is the identity of the replica that forwarded the call
	// (Via "forwarded"); OriginVia is how that replica authenticated the
	// caller.
	ForwardedBy, OriginVia string
}

func (p Principal) String() string {
	s := fmt.Sprintf("%s (%s, via %s", p.Name, p.Role, p.Via)
	if p.ForwardedBy != "" {
		s += " from " + p.ForwardedBy
	}
	return s + ")"
}

type principalKey struct{}

// NewContext returns ctx carrying p.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal the admin interceptors or the HTTP
// middleware put in ctx.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// PrincipalMetadataKey is the gRPC metadata key of a principal passed on
// by a replica (forwarding to the leader) or by the REST gateway (to its
// internal server).
const PrincipalMetadataKey = "coordinator-principal"

// encodePrincipal is p as a metadata value: name, role and via, URL-query
// encoded.
func encodePrincipal(p Principal) string {
	v := url.Values{}
	v.Set("name", p.Name)
	v.Set("role", p.Role.String())
	via := p.Via
	if p.OriginVia != "" {
		via = p.OriginVia
	}
	v.Set("via", via)
	return v.Encode()
}

func decodePrincipal(s string) (Principal, error) {
	v, err := url.ParseQuery(s)
	if err != nil {
		return Principal{}, fmt.Errorf("bad %s metadata: %w", PrincipalMetadataKey, err)
	}
	role, err := ParseRole(v.Get("role"))
	if err != nil {
		return Principal{}, fmt.Errorf("bad %s metadata: %w", PrincipalMetadataKey, err)
	}
	if v.Get("name") == "" {
		return Principal{}, fmt.Errorf("bad %s metadata: no name", PrincipalMetadataKey)
	}
	return Principal{Name: v.Get("name"), Role: role, Via: v.Get("via")}, nil
}

// credential is the bearer token a principal authenticated with, kept in
// the context (never logged) so that a follower can pass it on to a leader
// it cannot authenticate to as a replica.
type credentialKey struct{}

func withCredential(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return context.WithValue(ctx, credentialKey{}, token)
}

func credentialFrom(ctx context.Context) string {
	s, _ := ctx.Value(credentialKey{}).(string)
	return s
}

// callNote is what an admin call's handler tells the interceptor.
type callNote struct{ forwarded bool }

type noteKey struct{}

// MarkForwarded records that the admin call of ctx was forwarded to the
// leader rather than executed here: its audit line is then written by the
// leader, and this replica logs it at debug only.
func MarkForwarded(ctx context.Context) {
	if n, ok := ctx.Value(noteKey{}).(*callNote); ok {
		n.forwarded = true
	}
}
