package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/security/adminauth"
)

// adminAuthFlags configure admin roles (security/adminauth): a file of
// hashed bearer tokens, a file of mTLS identities with roles, and the
// identities of the replicas whose forwarded callers the leader accepts.
// With neither a token file nor a client CA, every admin caller is an
// operator (the loopback default).
type adminAuthFlags struct {
	tokenFile, identities, replicas string
}

// registerAdminAuthFlags defines the admin auth flags on fs.
func registerAdminAuthFlags(fs *pflag.FlagSet) *adminAuthFlags {
	f := &adminAuthFlags{}
	fs.StringVar(&f.tokenFile, "token-file", "",
		"YAML file of admin bearer tokens, hashed (tokens: [{name, role: viewer|operator, sha256}]; coordctl token create makes one), re-read when it changes; setting it turns admin authentication on")
	fs.StringVar(&f.identities, "admin-identities", "",
		"YAML file mapping client certificate identities (SPIFFE ID or CN; a trailing * matches a prefix) to admin roles (identities: [{identity, role}]), re-read when it changes; needs client certificates")
	fs.StringVar(&f.replicas, "replica-identities", "",
		"comma-separated client certificate identities of the replicas, the only peers whose forwarded admin callers the leader accepts (default: this replica's own certificate identity)")
	return f
}

func (f *adminAuthFlags) config() adminauth.Config {
	c := adminauth.Config{TokenFile: f.tokenFile, IdentityRolesFile: f.identities}
	for _, id := range strings.Split(f.replicas, ",") {
		if id = strings.TrimSpace(id); id != "" {
			c.ReplicaIdentities = append(c.ReplicaIdentities, id)
		}
	}
	// ClientCerts, OwnIdentity and ForwardPrincipal are the server's to
	// set from its TLS configuration (server.Config.TLS).
	return c
}

// validate reads the files once, so that a bad one stops the start with a
// message naming its flag; clientCerts says whether --client-ca is given.
func (f *adminAuthFlags) validate(clientCerts bool) error {
	c := f.config()
	c.ClientCerts = clientCerts
	if _, err := adminauth.New(c); err != nil {
		flag := "--token-file"
		if strings.Contains(err.Error(), "identit") {
			flag = "--admin-identities"
		}
		return fmt.Errorf("%s: %v", flag, err)
	}
	return nil
}

func (f *adminAuthFlags) apply(cfg *server.Config) { cfg.AdminAuth = f.config() }
