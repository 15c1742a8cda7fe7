package storage

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"

	"github.com/coordinator/coordinator/storage/internal/zapslog"
)

// ClientOption configures NewClient.
type ClientOption func(*clientv3.Config)

// WithTLS makes the client dial https:// endpoints (and those without a
// scheme) over TLS with c: the CA it verifies etcd with, and the client
// certificate it presents when etcd asks for one (--client-cert-auth).
// tlsfiles.Reloader.ClientConfig gives one that follows rotated files.
// http:// endpoints stay plain: etcd's client drops TLS for them.
func WithTLS(c *tls.Config) ClientOption {
	return func(cfg *clientv3.Config) { cfg.TLS = c }
}

// WithAuth makes the client authenticate as username with password (etcd
// with auth enabled); it fetches a token on connecting and again when the
// token expires. With an empty password it sends no credentials.
func WithAuth(username, password string) ClientOption {
	return func(cfg *clientv3.Config) { cfg.Username, cfg.Password = username, password }
}

// NewClient returns an etcd client for endpoints whose own (zap) logs go to
// lg at error level (clientv3 warns on every retried call during an
// outage; the coordinator reports outages itself). It does not wait for a
// connection: the first request does (so a refused handshake or bad
// credentials show there). A nil lg means slog.Default().
func NewClient(endpoints []string, lg *slog.Logger, opts ...ClientOption) (*clientv3.Client, error) {
	if lg == nil {
		lg = slog.Default()
	}
	cfg := clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		PermitWithoutStream:  true,
		Logger:               zapslog.New(lg.With("component", "etcd-client"), zapcore.ErrorLevel),
	}
	for _, o := range opts {
		o(&cfg)
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("storage: etcd client for %v: %w", endpoints, err)
	}
	return cli, nil
}
