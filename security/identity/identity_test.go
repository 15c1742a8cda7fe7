package identity

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coordinator/coordinator/security/testca"
)

func leaf(t *testing.T, ca *testca.CA, l testca.Leaf) *x509.Certificate {
	t.Helper()
	certPEM, _ := ca.Issue(t, l)
	b, _ := pem.Decode(certPEM)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFromChain(t *testing.T) {
	ca := testca.New(t, "ca")
	other := testca.New(t, "other")
	roots := func() []*x509.Certificate { return []*x509.Certificate{ca.Cert} }
	svid := leaf(t, ca, testca.Leaf{URIs: []string{"spiffe://prod.example/ns/shop/sa/auth"}, CommonName: "ignored"})
	cn := leaf(t, ca, testca.Leaf{CommonName: "billing", DNSNames: []string{"billing.example"}})
	nameless := leaf(t, ca, testca.Leaf{DNSNames: []string{"x.example"}})
	notSPIFFE := leaf(t, ca, testca.Leaf{URIs: []string{"https://example.org/x"}})
	foreign := leaf(t, other, testca.Leaf{URIs: []string{"spiffe://prod.example/ns/shop/sa/auth"}})

	for _, tc := range []struct {
		name   string
		r      Reader
		cert   *x509.Certificate
		want   string
		err    error
		domain string
	}{
		{"SPIFFE ID", Reader{Roots: roots}, svid, "spiffe://prod.example/ns/shop/sa/auth", nil, "prod.example"},
		{"SPIFFE ID wins over the CN", Reader{UseCN: true}, svid, "spiffe://prod.example/ns/shop/sa/auth", nil, "prod.example"},
		{"SPIFFE ID of the trust domain", Reader{TrustDomain: "prod.example", Roots: roots}, svid, "spiffe://prod.example/ns/shop/sa/auth", nil, "prod.example"},
		{"another trust domain", Reader{TrustDomain: "dev.example"}, svid, "", ErrUntrusted, ""},
		{"a URI that is no SPIFFE ID", Reader{UseCN: true}, notSPIFFE, "", ErrUntrusted, ""},
		{"an SVID the roots did not issue", Reader{Roots: roots}, foreign, "", ErrUntrusted, ""},
		{"a CN, not read", Reader{}, cn, "", ErrNoIdentity, ""},
		{"a CN, read", Reader{UseCN: true}, cn, "billing", nil, ""},
		{"nothing", Reader{UseCN: true}, nameless, "", ErrNoIdentity, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.r.FromChain([]*x509.Certificate{tc.cert})
			if !errors.Is(err, tc.err) || id.Name != tc.want {
				t.Fatalf("FromChain: %+v, %v; want %q, %v", id, err, tc.want, tc.err)
			}
			if tc.domain != "" && id.SPIFFE.TrustDomain().Name() != tc.domain {
				t.Errorf("trust domain %q", id.SPIFFE.TrustDomain())
			}
			if tc.err == nil && tc.domain == "" && !id.SPIFFE.IsZero() {
				t.Errorf("a CN identity with a SPIFFE ID %v", id.SPIFFE)
			}
		})
	}
	r := Reader{UseCN: true}
	if _, err := r.FromChain(nil); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("empty chain: %v", err)
	}
	// An unverified connection has no identity, whatever it presented.
	if _, err := r.FromConnection(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{cn}}); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("unverified chain: %v", err)
	}
	if id, err := r.FromConnection(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{cn},
		VerifiedChains: [][]*x509.Certificate{{cn, ca.Cert}}}); err != nil || id.Name != "billing" {
		t.Errorf("verified chain: %v %v", id, err)
	}
	if _, err := r.FromPeer(context.Background()); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("no peer: %v", err)
	}
}

func TestContext(t *testing.T) {
	if _, ok := FromContext(context.Background()); ok {
		t.Error("an identity in an empty context")
	}
	ctx := NewContext(context.Background(), ID{Name: "billing"})
	if id, ok := FromContext(ctx); !ok || id.String() != "billing" {
		t.Errorf("FromContext: %v %v", id, ok)
	}
	if _, ok := FromContext(NewContext(context.Background(), ID{})); ok {
		t.Error("a zero identity reported as one")
	}
}

func spiffe(t *testing.T, s string) ID {
	t.Helper()
	ca := testca.New(t, "ca")
	id, err := (&Reader{}).FromChain([]*x509.Certificate{leaf(t, ca, testca.Leaf{URIs: []string{s}})})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestDefaultPolicy(t *testing.T) {
	var p *Policy // nil: the default mapping
	auth := spiffe(t, "spiffe://prod.example/ns/shop/sa/auth")
	if err := p.MayRegister(auth, "auth"); err != nil {
		t.Errorf("service account auth as auth: %v", err)
	}
	if err := p.MayRegister(auth, "billing"); !errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), `may register as auth, not "billing"`) {
		t.Errorf("service account auth as billing: %v", err)
	}
	odd := spiffe(t, "spiffe://prod.example/workload/auth")
	if DefaultService(odd) != "" {
		t.Errorf("DefaultService of a path not /ns/NS/sa/SA: %q", DefaultService(odd))
	}
	if err := p.MayRegister(odd, "auth"); !errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), "no service") {
		t.Errorf("unmapped SPIFFE ID: %v", err)
	}
	if err := p.MayRegister(ID{Name: "billing"}, "billing"); err != nil {
		t.Errorf("CN billing as billing: %v", err)
	}
}

func writePolicy(t *testing.T, path, doc string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
}

// due makes the next use of p look at its file again (it does at most
// once a second).
func due(p *Policy) {
	p.mu.Lock()
	p.checked = time.Time{}
	p.mu.Unlock()
}

func TestPolicyRulesAndReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writePolicy(t, path, `
default: none
identities:
- identity: spiffe://prod.example/ns/shop/sa/batch
  services: [reports, exports]
- identity: spiffe://prod.example/ns/tools/*
  services: ["*"]
- identity: billing-legacy
  services: [billing]
`)
	var logs bytes.Buffer
	p, err := LoadPolicy(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	batch := spiffe(t, "spiffe://prod.example/ns/shop/sa/batch")
	tool := spiffe(t, "spiffe://prod.example/ns/tools/sa/deployer")
	auth := spiffe(t, "spiffe://prod.example/ns/shop/sa/auth")
	for _, tc := range []struct {
		id      ID
		service string
		ok      bool
	}{
		{batch, "reports", true}, {batch, "exports", true}, {batch, "batch", false}, // default none: no service account mapping
		{tool, "anything", true}, {auth, "auth", false},
		{ID{Name: "billing-legacy"}, "billing", true}, {ID{Name: "billing-legacy"}, "billing-legacy", false},
	} {
		if err := p.MayRegister(tc.id, tc.service); (err == nil) != tc.ok {
			t.Errorf("%s as %s: %v, want allowed=%v", tc.id, tc.service, err, tc.ok)
		}
	}

	// A new file is taken up.
	writePolicy(t, path, "identities:\n- identity: spiffe://prod.example/ns/shop/sa/batch\n  services: [reports]\n")
	due(p)
	if err := p.MayRegister(auth, "auth"); err != nil { // default service-account now
		t.Errorf("after reload, auth as auth: %v", err)
	}
	if err := p.MayRegister(batch, "exports"); err == nil {
		t.Error("after reload, batch as exports still allowed")
	}
	if !strings.Contains(logs.String(), "identity policy reloaded") {
		t.Errorf("reload not logged: %s", logs.String())
	}

	// A file that does not parse keeps the previous policy, and says so.
	for _, bad := range []string{"default: everyone\n", "identities:\n- identity: a*b\n  services: [x]\n", "identities: [{identity: x}]\n", "unknown: 1\n"} {
		writePolicy(t, path, bad)
		due(p)
		if err := p.MayRegister(batch, "reports"); err != nil {
			t.Errorf("after a bad file %q, the previous policy is gone: %v", bad, err)
		}
	}
	if !strings.Contains(logs.String(), "does not parse; keeping the previous one") {
		t.Errorf("bad file not logged: %s", logs.String())
	}
	// A file that disappeared, too.
	os.Remove(path)
	due(p)
	if err := p.MayRegister(batch, "reports"); err != nil {
		t.Errorf("after the file went: %v", err)
	}
}

func TestLoadPolicyErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadPolicy(filepath.Join(dir, "missing.yaml"), nil); err == nil {
		t.Error("a missing file")
	}
	path := filepath.Join(dir, "p.yaml")
	writePolicy(t, path, "identities:\n- identity: \"\"\n  services: [x]\n")
	if _, err := LoadPolicy(path, nil); err == nil || !strings.Contains(err.Error(), "identity is empty") {
		t.Errorf("an empty identity: %v", err)
	}
	writePolicy(t, path, `{"default": "none", "identities": [{"identity": "a", "services": ["b"]}]}`)
	p, err := LoadPolicy(path, nil)
	if err != nil {
		t.Fatalf("JSON policy: %v", err)
	}
	if err := p.MayRegister(ID{Name: "a"}, "b"); err != nil {
		t.Error(err)
	}
}
