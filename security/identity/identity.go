// Package identity owns workload identities: reading a peer's identity from
// its verified client certificate (a SPIFFE ID in the URI SAN, parsed and
// verified with go-spiffe, or the subject CN when so configured), carrying
// it in a context, and the policy of which services an identity may
// register as (policy.go).
package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Sentinel errors.
var (
	// ErrNoCertificate: the peer presented no verified client certificate.
	ErrNoCertificate = errors.New("identity: no verified client certificate")
	// ErrNoIdentity: the certificate names no identity this process reads
	// (no SPIFFE ID, and CNs are not read or the CN is empty).
	ErrNoIdentity = errors.New("identity: the client certificate names no identity")
	// ErrUntrusted: the SPIFFE ID is of a trust domain not accepted, or its
	// certificate is not a valid X509-SVID.
	ErrUntrusted = errors.New("identity: untrusted SPIFFE ID")
)

// ID is a workload's identity.
type ID struct {
	// Name is the SPIFFE ID as a string, or the CN.
	Name string
	// SPIFFE is the parsed SPIFFE ID; zero for a CN identity.
	SPIFFE spiffeid.ID
}

// IsZero reports whether id is no identity.
func (id ID) IsZero() bool { return id.Name == "" }

func (id ID) String() string { return id.Name }

// Reader reads identities from verified certificates.
type Reader struct {
	// UseCN reads the subject CN of a certificate without a SPIFFE ID.
	UseCN bool
	// TrustDomain, if set, is the only trust domain whose SPIFFE IDs are
	// accepted.
	TrustDomain string
	// Roots returns the CA certificates that verify client certificates:
	// the X509-SVID is verified against them (on top of the TLS handshake's
	// own verification) by go-spiffe. Nil skips that second check.
	Roots func() []*x509.Certificate
}

// FromConnection reads the identity of the TLS peer of cs, whose chain the
// handshake verified.
func (r *Reader) FromConnection(cs *tls.ConnectionState) (ID, error) {
	if cs == nil || len(cs.PeerCertificates) == 0 || len(cs.VerifiedChains) == 0 {
		return ID{}, ErrNoCertificate
	}
	return r.FromChain(cs.PeerCertificates)
}

// FromChain reads the identity of a verified chain (leaf first).
func (r *Reader) FromChain(chain []*x509.Certificate) (ID, error) {
	if len(chain) == 0 {
		return ID{}, ErrNoCertificate
	}
	leaf := chain[0]
	if len(leaf.URIs) > 0 {
		id, err := x509svid.IDFromCert(leaf)
		if err != nil {
			return ID{}, fmt.Errorf("%w: %w", ErrUntrusted, err)
		}
		if r.TrustDomain != "" && id.TrustDomain().Name() != r.TrustDomain {
			return ID{}, fmt.Errorf("%w: %s is not of trust domain %q", ErrUntrusted, id, r.TrustDomain)
		}
		if r.Roots != nil {
			src := rootsSource{roots: r.Roots()}
			if _, _, err := x509svid.Verify(chain, src); err != nil {
				return ID{}, fmt.Errorf("%w: %w", ErrUntrusted, err)
			}
		}
		return ID{Name: id.String(), SPIFFE: id}, nil
	}
	if r.UseCN && leaf.Subject.CommonName != "" {
		return ID{Name: leaf.Subject.CommonName}, nil
	}
	return ID{}, ErrNoIdentity
}

// FromPeer reads the identity of a gRPC call's peer (ErrNoCertificate for a
// plaintext connection or one without a client certificate).
func (r *Reader) FromPeer(ctx context.Context) (ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return ID{}, ErrNoCertificate
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return ID{}, ErrNoCertificate
	}
	return r.FromConnection(&ti.State)
}

// rootsSource trusts the same roots for every trust domain (which trust
// domains are accepted is Reader.TrustDomain's to say).
type rootsSource struct{ roots []*x509.Certificate }

func (s rootsSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if len(s.roots) == 0 {
		return nil, errors.New("no CA certificates")
	}
	return x509bundle.FromX509Authorities(td, s.roots), nil
}

type ctxKey struct{}

// NewContext returns ctx carrying id.
func NewContext(ctx context.Context, id ID) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity ctx carries (zero and false if none:
// the listener has no client certificates, as on loopback by default).
func FromContext(ctx context.Context) (ID, bool) {
	id, ok := ctx.Value(ctxKey{}).(ID)
	return id, ok && !id.IsZero()
}
