package tlsfiles_test

import (
	"crypto/tls"
	"errors"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coordinator/coordinator/security/testca"
	"github.com/coordinator/coordinator/security/tlsfiles"
)

func files(f testca.Files) tlsfiles.Files { return tlsfiles.Files{Cert: f.Cert, Key: f.Key, CA: f.CA} }

func newReloader(t *testing.T, f tlsfiles.Files) *tlsfiles.Reloader {
	t.Helper()
	r, err := tlsfiles.New(f, tlsfiles.WithCheckInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// serve accepts TLS connections with cfg on loopback, completing each
// handshake and writing one byte, until the test ends.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if err := c.(*tls.Conn).Handshake(); err == nil {
					_, _ = c.Write([]byte{1})
				}
			}()
		}
	}()
	return lis.Addr().String()
}

// dial handshakes with addr and reads the server's byte: with TLS 1.3 a
// refused client certificate shows on the first read.
func dial(addr string, cfg *tls.Config) (*big.Int, error) {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

func TestHandshakeAndRefusals(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "ca")
	srv := newReloader(t, files(ca.WriteFiles(t, dir, "server", testca.Leaf{ServerOnly: true})))
	cfg, err := srv.ServerConfig(tlsfiles.RequireAndVerify)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, cfg)

	good := newReloader(t, files(ca.WriteFiles(t, t.TempDir(), "client", testca.Leaf{CommonName: "c", ClientOnly: true})))
	// ServerName empty: tls.Dial fills in the host dialled.
	if _, err := dial(addr, good.ClientConfig("")); err != nil {
		t.Fatalf("a client of the CA: %v", err)
	}
	other := testca.New(t, "other")
	odir := t.TempDir()
	wrongCA := newReloader(t, files(other.WriteFiles(t, odir, "client", testca.Leaf{CommonName: "c", ClientOnly: true})))
	if _, err := dial(addr, wrongCA.ClientConfig("localhost")); err == nil || !strings.Contains(err.Error(), "server certificate") {
		t.Errorf("a client trusting another CA: %v, want the server's certificate refused", err)
	}
	// Certificate of the other CA, trusting the right one.
	f := files(other.WriteFiles(t, t.TempDir(), "client", testca.Leaf{CommonName: "c", ClientOnly: true}))
	f.CA = filepath.Join(dir, "ca.crt")
	if _, err := dial(addr, newReloader(t, f).ClientConfig("localhost")); err == nil {
		t.Error("a client certificate of another CA was accepted")
	}
	ef := files(ca.WriteFiles(t, t.TempDir(), "client", testca.Leaf{CommonName: "c", ClientOnly: true,
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}))
	if _, err := dial(addr, newReloader(t, ef).ClientConfig("localhost")); err == nil {
		t.Error("an expired client certificate was accepted")
	}
	noCert := newReloader(t, tlsfiles.Files{CA: filepath.Join(dir, "ca.crt")})
	if _, err := dial(addr, noCert.ClientConfig("localhost")); err == nil {
		t.Error("RequireAndVerify accepted a client without a certificate")
	}
	// The server's name is checked.
	if _, err := dial(addr, good.ClientConfig("elsewhere.example")); err == nil {
		t.Error("a server certificate for localhost was accepted as elsewhere.example")
	}

	// VerifyIfGiven: no certificate is fine, a bad one is not.
	cfg2, err := srv.ServerConfig(tlsfiles.VerifyIfGiven)
	if err != nil {
		t.Fatal(err)
	}
	addr2 := serve(t, cfg2)
	if _, err := dial(addr2, noCert.ClientConfig("localhost")); err != nil {
		t.Errorf("VerifyIfGiven, no client certificate: %v", err)
	}
	if _, err := dial(addr2, newReloader(t, ef).ClientConfig("localhost")); err == nil {
		t.Error("VerifyIfGiven accepted an expired client certificate")
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "ca")
	f := files(ca.WriteFiles(t, dir, "server", testca.Leaf{}))
	if _, err := tlsfiles.New(tlsfiles.Files{Cert: f.Cert}); err == nil {
		t.Error("a certificate without its key")
	}
	if _, err := tlsfiles.New(tlsfiles.Files{Cert: f.Cert, Key: filepath.Join(dir, "nope.key")}); err == nil || !strings.Contains(err.Error(), "key") {
		t.Errorf("a missing key: %v", err)
	}
	if _, err := tlsfiles.New(tlsfiles.Files{Cert: f.Key, Key: f.Cert}); err == nil {
		t.Error("swapped certificate and key")
	}
	if _, err := tlsfiles.New(tlsfiles.Files{CA: f.Key}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a CA bundle without certificates: %v", err)
	}
	r := newReloader(t, tlsfiles.Files{CA: f.CA})
	if _, err := r.ServerConfig(tlsfiles.NoClientCert); !errors.Is(err, tlsfiles.ErrNoCertificate) {
		t.Errorf("server config without a certificate: %v", err)
	}
	r = newReloader(t, tlsfiles.Files{Cert: f.Cert, Key: f.Key})
	if _, err := r.ServerConfig(tlsfiles.VerifyIfGiven); err == nil {
		t.Error("verifying clients without a CA")
	}
	if !r.HasCertificate() || r.HasCA() || len(r.CACertificates()) != 0 {
		t.Error("HasCertificate/HasCA/CACertificates")
	}
}

// A rewritten pair is taken by the next handshake (Reloads counts it); a
// pair caught half written (a key that does not match the certificate)
// keeps the previous one, until the rotation completes.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "ca")
	f := files(ca.WriteFiles(t, dir, "server", testca.Leaf{}))
	r := newReloader(t, f)
	cfg, err := r.ServerConfig(tlsfiles.NoClientCert)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, cfg)
	cli := newReloader(t, tlsfiles.Files{CA: f.CA}).ClientConfig("localhost")
	first, err := dial(addr, cli)
	if err != nil {
		t.Fatal(err)
	}
	if r.Reloads() != 0 {
		t.Fatalf("reloads before any rotation: %d", r.Reloads())
	}

	ca.WriteFiles(t, dir, "server", testca.Leaf{})
	second, err := dial(addr, cli)
	if err != nil {
		t.Fatal(err)
	}
	if second.Cmp(first) == 0 || r.Reloads() != 1 {
		t.Fatalf("after rotation: serial %v (was %v), reloads %d; want a new serial, 1 reload", second, first, r.Reloads())
	}

	// Half written: a new certificate, the old key.
	other := t.TempDir()
	nf := ca.WriteFiles(t, other, "server", testca.Leaf{})
	newCert, err := os.ReadFile(nf.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Cert, newCert, 0o600); err != nil {
		t.Fatal(err)
	}
	third, err := dial(addr, cli)
	if err != nil || third.Cmp(second) != 0 || r.Reloads() != 1 {
		t.Fatalf("half-written pair: serial %v, %v, reloads %d; want the previous certificate %v kept", third, err, r.Reloads(), second)
	}
	newKey, err := os.ReadFile(nf.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Key, newKey, 0o600); err != nil {
		t.Fatal(err)
	}
	fourth, err := dial(addr, cli)
	if err != nil || fourth.Cmp(second) == 0 || r.Reloads() != 2 {
		t.Fatalf("completed rotation: serial %v, %v, reloads %d", fourth, err, r.Reloads())
	}
	if c, _ := r.Current(); c.Leaf == nil || c.Leaf.SerialNumber.Cmp(fourth) != 0 {
		t.Error("Current is not the certificate presented")
	}

	// A rotated CA bundle is taken up by clients too.
	ca2 := testca.New(t, "ca2")
	f2 := files(ca2.WriteFiles(t, dir, "server", testca.Leaf{})) // server and ca.crt now of ca2
	if _, err := dial(addr, cli); err != nil {
		t.Fatalf("after rotating the CA and the server certificate together: %v", err)
	}
	if got := newReloader(t, f2).CACertificates(); len(got) != 1 || got[0].Subject.CommonName != "ca2" {
		t.Errorf("CACertificates: %v", got)
	}
}

// The check interval bounds how often files are read.
func TestCheckInterval(t *testing.T) {
	dir := t.TempDir()
	ca := testca.New(t, "ca")
	f := files(ca.WriteFiles(t, dir, "server", testca.Leaf{}))
	r, err := tlsfiles.New(f, tlsfiles.WithCheckInterval(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := r.Current()
	ca.WriteFiles(t, dir, "server", testca.Leaf{})
	if after, _ := r.Current(); after != before || r.Reloads() != 0 {
		t.Error("files re-read before the check interval")
	}
}
