package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/pflag"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/security/identity"
)

// identityFlags name the policy of which services each workload identity
// may register as (security/identity; docs/SECURITY.md). It applies to
// sidecars that present a client certificate (--client-ca).
type identityFlags struct {
	policy *string
}

func registerIdentityFlags(fs *pflag.FlagSet) *identityFlags {
	return &identityFlags{
		policy: fs.String("identity-policy", "",
			"YAML file of the services each sidecar identity may register as, re-read when it changes "+
				"(default: spiffe://DOMAIN/ns/NS/sa/SERVICE may register as SERVICE, a CN identity as the service of its name)"),
	}
}

// apply loads the policy into cfg; the error names the flag and says what
// is wrong with the file.
func (f *identityFlags) apply(cfg *coordinator.Config, lg *slog.Logger) error {
	if *f.policy == "" {
		return nil
	}
	p, err := identity.LoadPolicy(*f.policy, lg)
	if err != nil {
		return fmt.Errorf("--identity-policy: %w", err)
	}
	cfg.IdentityPolicy = p
	return nil
}
