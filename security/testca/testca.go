// Package testca is a throwaway certificate authority for tests and
// benchmarks: it issues
// server and client certificates (DNS and IP names, SPIFFE IDs, any
// validity window) with crypto/x509 and writes them to files in the PEM
// layout tlsfiles reads. Nothing here is fit for production keys.
package testca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a certificate authority with its key in memory.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// PEM is Cert in PEM: the bundle a peer trusts.
	PEM []byte
}

var serial atomic.Int64

// New creates a CA named name, valid from an hour ago for a day.
func New(t testing.TB, name string) *CA {
	t.Helper()
	ca, err := Create(name)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return ca
}

// Create is New for a program (a benchmark): it returns the error.
func Create(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial.Add(1)),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"coordinator tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Leaf describes a certificate to issue.
type Leaf struct {
	CommonName string
	// DNSNames and IPs are the names a server answers as. A leaf with
	// neither and no URIs gets "localhost" and 127.0.0.1.
	DNSNames []string
	IPs      []net.IP
	// URIs are URI SANs, such as spiffe://example.org/ns/default/sa/auth.
	URIs []string
	// NotBefore and NotAfter default to an hour ago and a day from now.
	NotBefore, NotAfter time.Time
	// ClientOnly and ServerOnly restrict the extended key usage; by
	// default a leaf may serve and be a client (replicas are both).
	ClientOnly, ServerOnly bool
}

// Issue returns a certificate and its private key, both in PEM.
func (ca *CA) Issue(t testing.TB, l Leaf) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := ca.issue(l)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return certPEM, keyPEM
}

func (ca *CA) issue(l Leaf) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if l.NotBefore.IsZero() {
		l.NotBefore = time.Now().Add(-time.Hour)
	}
	if l.NotAfter.IsZero() {
		l.NotAfter = time.Now().Add(24 * time.Hour)
	}
	if len(l.DNSNames) == 0 && len(l.IPs) == 0 && len(l.URIs) == 0 {
		l.DNSNames, l.IPs = []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	eku := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	switch {
	case l.ClientOnly:
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	case l.ServerOnly:
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)),
		Subject:      pkix.Name{CommonName: l.CommonName},
		NotBefore:    l.NotBefore,
		NotAfter:     l.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  eku,
		DNSNames:     l.DNSNames,
		IPAddresses:  l.IPs,
	}
	for _, s := range l.URIs {
		u, err := url.Parse(s)
		if err != nil {
			return nil, nil, fmt.Errorf("URI SAN %q: %w", s, err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// Files are the paths WriteFiles wrote.
type Files struct {
	Cert, Key, CA string
}

// WriteFiles issues l and writes NAME.crt, NAME.key and ca.crt (this CA)
// into dir, replacing files already there (as cert-manager and SPIRE
// rotate them: a new file renamed over the old).
func (ca *CA) WriteFiles(t testing.TB, dir, name string, l Leaf) Files {
	t.Helper()
	f, err := ca.Write(dir, name, l)
	if err != nil {
		t.Fatalf("testca: %v", err)
	}
	return f
}

// Write is WriteFiles for a program (a benchmark): it returns the error.
func (ca *CA) Write(dir, name string, l Leaf) (Files, error) {
	certPEM, keyPEM, err := ca.issue(l)
	if err != nil {
		return Files{}, err
	}
	f := Files{Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key"), CA: filepath.Join(dir, "ca.crt")}
	for _, w := range []struct {
		path string
		data []byte
	}{{f.Key, keyPEM}, {f.Cert, certPEM}, {f.CA, ca.PEM}} {
		if err := writeAtomic(w.path, w.data); err != nil {
			return Files{}, err
		}
	}
	return f, nil
}

// WriteCA writes this CA's bundle to path.
func (ca *CA) WriteCA(t testing.TB, path string) {
	t.Helper()
	if err := writeAtomic(path, ca.PEM); err != nil {
		t.Fatalf("testca: %v", err)
	}
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
