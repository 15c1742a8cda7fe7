// Package tlsfiles reads a certificate, its key and a CA bundle from files
// and keeps them current: cert-manager and SPIRE rotate them hourly, and a
// process must pick up the new ones without a restart or a dropped
// connection. It builds the server and client tls.Config of every listener
// and dialer in the project from them.
//
// The files are re-read at most once per CheckInterval, on a handshake
// that needs them (no goroutine). A new pair that does not parse, or a key
// that does not match its certificate (a rotation caught between its two
// writes), is logged and the previous one kept until the next check.
package tlsfiles

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// DefaultCheckInterval is how often the files are looked at again.
const DefaultCheckInterval = time.Second

// Files names the PEM files. Cert and Key go together (both or neither);
// CA is the bundle that verifies peers: clients' certificates on a server,
// the server's on a client (empty: the system roots on a client, no client
// certificates on a server).
type Files struct {
	Cert, Key, CA string
}

// Empty reports whether no file is named.
func (f Files) Empty() bool { return f.Cert == "" && f.Key == "" && f.CA == "" }

// ErrNoCertificate: a server needs a certificate.
var ErrNoCertificate = errors.New("tlsfiles: no certificate (--tls-cert and --tls-key)")

// Reloader holds the current contents of Files.
type Reloader struct {
	files Files
	lg    *slog.Logger
	every time.Duration
	now   func() time.Time

	mu        sync.Mutex
	checked   time.Time
	certPEM   []byte // as last read, parsed or not
	keyPEM    []byte
	caPEM     []byte
	cert      *tls.Certificate // nil without Cert
	pool      *x509.CertPool   // nil without CA
	cas       []*x509.Certificate
	leaf      *x509.Certificate
	reloads   int
	lastError error
}

// Option configures a Reloader.
type Option func(*Reloader)

// WithLogger logs reloads and files that could not be read.
func WithLogger(lg *slog.Logger) Option { return func(r *Reloader) { r.lg = lg } }

// WithCheckInterval sets how often the files are read again (tests use a
// short one; 0 reads them on every handshake).
func WithCheckInterval(d time.Duration) Option { return func(r *Reloader) { r.every = d } }

// New reads files once; an error says which file is missing or bad.
func New(files Files, opts ...Option) (*Reloader, error) {
	if (files.Cert == "") != (files.Key == "") {
		return nil, fmt.Errorf("tlsfiles: a certificate and its key go together (cert %q, key %q)", files.Cert, files.Key)
	}
	r := &Reloader{files: files, lg: slog.New(slog.DiscardHandler), every: DefaultCheckInterval, now: time.Now}
	for _, o := range opts {
		o(r)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.load(); err != nil {
		return nil, err
	}
	r.checked = r.now()
	return r, nil
}

// Files are the files r reads.
func (r *Reloader) Files() Files { return r.files }

// HasCertificate reports whether r has a certificate to present.
func (r *Reloader) HasCertificate() bool { return r.files.Cert != "" }

// HasCA reports whether r has a CA bundle to verify peers with.
func (r *Reloader) HasCA() bool { return r.files.CA != "" }

// Reloads counts the times new contents were taken up after New.
func (r *Reloader) Reloads() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reloads
}

// current returns the certificate, pool and leaf, re-reading the files if
// the last look is older than the check interval.
func (r *Reloader) current() (*tls.Certificate, *x509.CertPool, *x509.Certificate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.checked) >= r.every {
		r.checked = now
		if err := r.load(); err != nil {
			if r.lastError == nil || r.lastError.Error() != err.Error() {
				r.lg.Warn("tls files could not be reloaded; keeping the previous ones", "error", err)
			}
			r.lastError = err
		} else {
			r.lastError = nil
		}
	}
	return r.cert, r.pool, r.leaf
}

// Current returns the certificate in use (nil without one) and the CA pool
// (nil without one), reloading first if due.
func (r *Reloader) Current() (*tls.Certificate, *x509.CertPool) {
	c, p, _ := r.current()
	return c, p
}

// CACertificates returns the certificates of the CA bundle (nil without
// one), reloading first if due: the roots a SPIFFE verifier trusts.
func (r *Reloader) CACertificates() []*x509.Certificate {
	r.current()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cas
}

// parseCerts parses every CERTIFICATE block of a PEM bundle.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// load reads the files and takes what changed. Called with mu held.
func (r *Reloader) load() error {
	var certPEM, keyPEM, caPEM []byte
	var err error
	if r.files.Cert != "" {
		if certPEM, err = os.ReadFile(r.files.Cert); err != nil {
			return fmt.Errorf("tlsfiles: certificate: %w", err)
		}
		if keyPEM, err = os.ReadFile(r.files.Key); err != nil {
			return fmt.Errorf("tlsfiles: key: %w", err)
		}
	}
	if r.files.CA != "" {
		if caPEM, err = os.ReadFile(r.files.CA); err != nil {
			return fmt.Errorf("tlsfiles: CA bundle: %w", err)
		}
	}
	changed := false
	if r.files.Cert != "" && (!bytes.Equal(certPEM, r.certPEM) || !bytes.Equal(keyPEM, r.keyPEM)) {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("tlsfiles: %s and %s: %w", r.files.Cert, r.files.Key, err)
		}
		leaf := pair.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
				return fmt.Errorf("tlsfiles: %s: %w", r.files.Cert, err)
			}
		}
		r.cert, r.leaf, r.certPEM, r.keyPEM = &pair, leaf, certPEM, keyPEM
		changed = true
	}
	if r.files.CA != "" && !bytes.Equal(caPEM, r.caPEM) {
		cas, err := parseCerts(caPEM)
		if err != nil || len(cas) == 0 {
			return fmt.Errorf("tlsfiles: %s: no PEM certificate in the CA bundle (%v)", r.files.CA, err)
		}
		pool := x509.NewCertPool()
		for _, c := range cas {
			pool.AddCert(c)
		}
		r.pool, r.cas, r.caPEM = pool, cas, caPEM
		changed = true
	}
	if changed && !r.checked.IsZero() { // not New's first read
		r.reloads++
		attrs := []any{"cert", r.files.Cert, "ca", r.files.CA}
		if r.leaf != nil {
			attrs = append(attrs, "not_after", r.leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		r.lg.Info("tls files reloaded", attrs...)
	}
	return nil
}

// ClientAuth says what a server asks of clients.
type ClientAuth int

const (
	// NoClientCert: clients are not asked for a certificate.
	NoClientCert ClientAuth = iota
	// VerifyIfGiven: a client may present a certificate, which must verify
	// against the CA; a client without one is still served (admin clients
	// with tokens, probes); what it may do is decided above TLS.
	VerifyIfGiven
	// RequireAndVerify: every client presents a certificate the CA verifies.
	RequireAndVerify
)

// ServerConfig is the config of a TLS listener: r's certificate, and client
// certificates verified against r's CA as auth says (auth other than
// NoClientCert needs a CA). Each handshake takes the current files, so a
// rotation applies to new connections and leaves open ones alone.
func (r *Reloader) ServerConfig(auth ClientAuth) (*tls.Config, error) {
	if !r.HasCertificate() {
		return nil, ErrNoCertificate
	}
	if auth != NoClientCert && !r.HasCA() {
		return nil, errors.New("tlsfiles: verifying client certificates needs a CA bundle (--client-ca)")
	}
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cert, pool, _ := r.current()
		c := base.Clone()
		c.GetConfigForClient = nil
		c.Certificates = []tls.Certificate{*cert}
		switch auth {
		case VerifyIfGiven:
			c.ClientAuth, c.ClientCAs = tls.VerifyClientCertIfGiven, pool
		case RequireAndVerify:
			c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, pool
		}
		return c, nil
	}
	return base, nil
}

// ClientConfig is the config of a TLS dialer to serverName (a DNS name or
// IP; empty: the host the caller dials, which grpc and net/http fill in):
// r's certificate if it has one (mTLS), and the server verified against
// r's CA, else against the system roots. Both are read at each handshake,
// so a rotated client certificate or CA bundle needs no restart.
func (r *Reloader) ClientConfig(serverName string) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if r.HasCertificate() {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _, _ := r.current()
			return cert, nil
		}
	}
	if r.HasCA() {
		// The pool may change between handshakes, and tls.Config's RootCAs
		// cannot: verify here against the current one. Verification is not
		// skipped; it moves to VerifyConnection, which fails the handshake.
		c.InsecureSkipVerify = true
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			_, pool, _ := r.current()
			return VerifyServer(cs, pool)
		}
	}
	return c
}

// VerifyServer verifies the server's chain in cs against roots, for the
// server name the client asked for.
func VerifyServer(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tlsfiles: the server presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		DNSName: cs.ServerName, Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("tlsfiles: server certificate: %w", err)
	}
	return nil
}

// DialCredentials are the gRPC transport credentials of a client of the
// coordinator: TLS from files (re-read as they rotate) when any is named,
// else plaintext (a coordinator on loopback).
func DialCredentials(files Files, serverName string, opts ...Option) (credentials.TransportCredentials, error) {
	if files.Empty() {
		return insecure.NewCredentials(), nil
	}
	r, err := New(files, opts...)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(r.ClientConfig(serverName)), nil
}
