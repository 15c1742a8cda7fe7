package storage

import (
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"

	"github.com/coordinator/coordinator/storage/internal/zapslog"
)

// NewClient returns an etcd client for endpoints whose own (zap) logs go to
// lg at error level (clientv3 warns on every retried call during an
// outage; the coordinator reports outages itself). It does not wait for a
// connection: the first request does. A nil lg means slog.Default().
func NewClient(endpoints []string, lg *slog.Logger) (*clientv3.Client, error) {
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
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("storage: etcd client for %v: %w", endpoints, err)
	}
	return cli, nil
}
