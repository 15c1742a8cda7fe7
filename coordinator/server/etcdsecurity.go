package server

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/coordinator/coordinator/security/tlsfiles"
	"github.com/coordinator/coordinator/storage"
)

// ErrEtcdSecurity is returned by Start for etcd TLS or auth settings that
// do not go together.
var ErrEtcdSecurity = errors.New("server: etcd security settings")

// etcdClientOptions checks cfg's etcd TLS and auth settings and returns
// the options of this replica's etcd client: for an external etcd, its
// CA, client certificate and user; for a member of an embedded cluster,
// the member's client TLS (its listener requires a client certificate of
// its CA). The TLS config re-reads rotated files (tlsfiles).
func etcdClientOptions(cfg Config, lg *slog.Logger) ([]storage.ClientOption, error) {
	var opts []storage.ClientOption
	clientTLS := func(f tlsfiles.Files, what string) error {
		r, err := tlsfiles.New(f, tlsfiles.WithLogger(lg.With("component", "etcd-client-tls")))
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrEtcdSecurity, what, err)
		}
		opts = append(opts, storage.WithTLS(r.ClientConfig("")))
		return nil
	}
	if len(cfg.EtcdEndpoints) == 0 {
		if !cfg.EtcdTLS.Empty() || cfg.EtcdUsername != "" || cfg.EtcdPassword != "" {
			return nil, fmt.Errorf("%w: EtcdTLS, EtcdUsername and EtcdPassword are for an external etcd (EtcdEndpoints)", ErrEtcdSecurity)
		}
		if !cfg.EtcdClientTLS.Empty() {
			if err := clientTLS(cfg.EtcdClientTLS, "EtcdClientTLS"); err != nil {
				return nil, err
			}
		}
		return opts, nil
	}
	if !cfg.EtcdPeerTLS.Empty() || !cfg.EtcdClientTLS.Empty() {
		return nil, fmt.Errorf("%w: EtcdPeerTLS and EtcdClientTLS are for the embedded etcd; use EtcdTLS with EtcdEndpoints", ErrEtcdSecurity)
	}
	if !cfg.EtcdTLS.Empty() {
		for _, ep := range cfg.EtcdEndpoints {
			if strings.HasPrefix(ep, "http://") {
				return nil, fmt.Errorf("%w: endpoint %s is plain http, but TLS is configured: use https://", ErrEtcdSecurity, ep)
			}
		}
		if err := clientTLS(cfg.EtcdTLS, "EtcdTLS"); err != nil {
			return nil, err
		}
	}
	if (cfg.EtcdUsername == "") != (cfg.EtcdPassword == "") {
		return nil, fmt.Errorf("%w: EtcdUsername and EtcdPassword go together", ErrEtcdSecurity)
	}
	if cfg.EtcdUsername != "" {
		opts = append(opts, storage.WithAuth(cfg.EtcdUsername, cfg.EtcdPassword))
	}
	return opts, nil
}
