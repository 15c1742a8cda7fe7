package storage

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultHealthTimeout bounds Check when its context has no earlier
// deadline.
const DefaultHealthTimeout = 2 * time.Second

// healthKey is read by Check; it need not exist (etcdctl endpoint health
// reads the same key).
const healthKey = "health"

// Check reports whether etcd can serve the coordinator, as ServiceCenter's
// /health does: a linearizable read (it needs a leader and a quorum) and
// no alarm raised (a NOSPACE alarm makes etcd refuse writes). It fails
// within DefaultHealthTimeout with an error wrapping ErrUnavailable and the
// cause.
func Check(ctx context.Context, cli *clientv3.Client) error {
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), DefaultHealthTimeout)
	defer cancel()
	start := time.Now()
	// A permission error still proves a quorum answered (as in etcdctl).
	if _, err := cli.Get(ctx, healthKey); err != nil && !errors.Is(err, rpctypes.ErrPermissionDenied) {
		return fmt.Errorf("%w: linearizable read after %v: %w", ErrUnavailable, time.Since(start).Round(time.Millisecond), err)
	}
	resp, err := cli.AlarmList(ctx)
	if err != nil {
		if errors.Is(err, rpctypes.ErrPermissionDenied) {
			return nil
		}
		return fmt.Errorf("%w: alarm list: %w", ErrUnavailable, err)
	}
	for _, a := range resp.Alarms {
		return fmt.Errorf("%w: alarm %v raised on member %016x", ErrUnavailable, a.Alarm, a.MemberID)
	}
	return nil
}
