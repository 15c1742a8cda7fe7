// Package benchtls sets a benchmark's coordinator and clients up with TLS
// everywhere they talk, as production does: a throwaway CA
// (security/testca), a server certificate for loopback, one client
// certificate (the SPIFFE ID spiffe://bench.local/ns/bench/sa/bench) that
// every simulated sidecar and admin client presents, and the identity
// policy that lets it register as any service. Benchmarks compare runs with
// it and without (docs/BENCHMARKS.md, TLS cost).
package benchtls

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/security/identity"
	"github.com/coordinator/coordinator/security/testca"
	"github.com/coordinator/coordinator/security/tlsfiles"
)

// ClientID is the identity of every client of a benchmark.
const ClientID = "spiffe://bench.local/ns/bench/sa/bench"

// Files are the files Setup wrote.
type Files struct {
	// Server: the coordinator's certificate and key; CA verifies clients.
	Server tlsfiles.Files
	// Client: the clients' certificate and key; CA verifies the server.
	Client tlsfiles.Files
	// Policy lets ClientID register as any service.
	Policy string
	// AdminIdentities gives ClientID the operator role.
	AdminIdentities string
}

// Setup writes the files into dir.
func Setup(dir string) (Files, error) {
	ca, err := testca.Create("bench CA")
	if err != nil {
		return Files{}, err
	}
	srv, err := ca.Write(dir, "server", testca.Leaf{CommonName: "coordinator", URIs: []string{"spiffe://bench.local/ns/bench/sa/coordinator"},
		DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}})
	if err != nil {
		return Files{}, err
	}
	cli, err := ca.Write(dir, "client", testca.Leaf{URIs: []string{ClientID}, ClientOnly: true})
	if err != nil {
		return Files{}, err
	}
	policy := filepath.Join(dir, "identity-policy.yaml")
	body := fmt.Sprintf("identities:\n- identity: %s\n  services: [\"*\"]\n", ClientID)
	if err := os.WriteFile(policy, []byte(body), 0o600); err != nil {
		return Files{}, err
	}
	roles := filepath.Join(dir, "admin-identities.yaml")
	if err := os.WriteFile(roles, []byte(fmt.Sprintf("identities:\n- identity: %s\n  role: operator\n", ClientID)), 0o600); err != nil {
		return Files{}, err
	}
	if f := At(dir); f.Server.Cert != srv.Cert || f.Client.Cert != cli.Cert || f.Policy != policy {
		return Files{}, fmt.Errorf("benchtls: At(%q) does not name the files Setup wrote", dir)
	}
	return At(dir), nil
}

// At names the files Setup wrote into dir (for a child process).
func At(dir string) Files {
	p := func(name string) string { return filepath.Join(dir, name) }
	return Files{
		Server:          tlsfiles.Files{Cert: p("server.crt"), Key: p("server.key"), CA: p("ca.crt")},
		Client:          tlsfiles.Files{Cert: p("client.crt"), Key: p("client.key"), CA: p("ca.crt")},
		Policy:          p("identity-policy.yaml"),
		AdminIdentities: p("admin-identities.yaml"),
	}
}

// Configure sets cfg up to serve with f: TLS on gRPC and HTTP, client
// certificates required of sidecars, the identity policy, and the
// operator role for ClientID (admin authentication is on, as client
// certificates are verified).
func (f Files) Configure(cfg *server.Config) error {
	p, err := identity.LoadPolicy(f.Policy, nil)
	if err != nil {
		return err
	}
	cfg.TLS = f.Server
	cfg.Coordinator.IdentityPolicy = p
	cfg.AdminAuth.IdentityRolesFile = f.AdminIdentities
	return nil
}
