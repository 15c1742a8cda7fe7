package main

import (
	"fmt"
	"net"
	"strings"

	"github.com/spf13/pflag"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/security/tlsfiles"
)

// tlsFlags are the flags of the listeners' transport security (issue 12):
// the server certificate, the client CA that verifies sidecars' (and other
// replicas') certificates, how an identity is read from one, the
// plaintext health listener, and --insecure.
type tlsFlags struct {
	cert, key, clientCA  *string
	identityFrom, domain *string
	healthAddr           *string
	insecure             *bool
}

func registerTLSFlags(fs *pflag.FlagSet) *tlsFlags {
	return &tlsFlags{
		cert: fs.String("tls-cert", "", "PEM certificate (chain) of the gRPC and HTTP listeners: they serve TLS with it, re-read as it rotates. "+
			"With several replicas it must be issued by a CA in --client-ca and be valid as a client certificate too (extended key usage serverAuth and clientAuth): followers present it to the leader"),
		key: fs.String("tls-key", "", "PEM private key of --tls-cert"),
		clientCA: fs.String("client-ca", "", "PEM bundle of the CA(s) that issue client certificates: a client certificate, if given, must verify against it; "+
			"the sidecar stream requires one and reads the sidecar's identity from it; followers verify the leader's certificate with it (needs --tls-cert)"),
		identityFrom: fs.String("tls-identity-from", "spiffe", "what names a sidecar in its client certificate: spiffe (the SPIFFE ID in its URI SAN) or cn (the SPIFFE ID if any, else the subject CN)"),
		domain:       fs.String("trust-domain", "", "accept only SPIFFE IDs of this trust domain (e.g. prod.example) in client certificates (default: any the client CA issued)"),
		healthAddr: fs.String("health-addr", "", "plaintext listen address serving only /health, /metrics and grpc.health.v1, for probes and scrapers without a client certificate "+
			"(e.g. 0.0.0.0:7402; default: none)"),
		insecure: fs.Bool("insecure", false, "serve plaintext (no TLS) on a --grpc-addr or --http-addr beyond loopback; without it coordinatord refuses to, "+
			"since anyone who reaches the port could register as any service or run updates"),
	}
}

// validate checks the flags against the listen addresses: it returns what
// is wrong in one line that names the flag and the fix.
func (f *tlsFlags) validate(grpcAddr, httpAddr string) error {
	switch *f.identityFrom {
	case "spiffe", "cn":
	default:
		return fmt.Errorf("--tls-identity-from %q: want spiffe or cn", *f.identityFrom)
	}
	if *f.cert == "" {
		for _, a := range []struct{ flag, addr string }{{"--grpc-addr", grpcAddr}, {"--http-addr", httpAddr}} {
			if !*f.insecure && !isLoopback(a.addr) {
				return fmt.Errorf("%s %s listens beyond loopback without TLS: give --tls-cert and --tls-key (and --client-ca, to require "+
					"client certificates of sidecars), or --insecure to serve plaintext anyway on a network that protects it", a.flag, a.addr)
			}
		}
		if *f.key != "" {
			return fmt.Errorf("--tls-key needs --tls-cert")
		}
		if *f.clientCA != "" {
			return fmt.Errorf("--client-ca needs --tls-cert and --tls-key: client certificates are verified in the TLS handshake")
		}
	} else if *f.key == "" {
		return fmt.Errorf("--tls-cert needs --tls-key")
	}
	if *f.clientCA == "" && (*f.domain != "" || *f.identityFrom != "spiffe") {
		return fmt.Errorf("--trust-domain and --tls-identity-from read client certificates: they need --client-ca")
	}
	if *f.cert != "" {
		// Read them now: a missing or bad file is a bad command line.
		if _, err := tlsfiles.New(f.files()); err != nil {
			return fmt.Errorf("--tls-cert, --tls-key, --client-ca: %v", err)
		}
	}
	return nil
}

func (f *tlsFlags) files() tlsfiles.Files {
	return tlsfiles.Files{Cert: *f.cert, Key: *f.key, CA: *f.clientCA}
}

func (f *tlsFlags) apply(cfg *server.Config) {
	cfg.TLS = f.files()
	cfg.Identity.UseCN = *f.identityFrom == "cn"
	cfg.Identity.TrustDomain = *f.domain
	cfg.HealthAddr = *f.healthAddr
}

// isLoopback reports whether a listen address (host:port) binds loopback
// only: an IP that is loopback, or "localhost". An empty host, 0.0.0.0,
// ::, any other IP or host name may be reached from the network.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}
