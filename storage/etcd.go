package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
)

// Fence describes the leader's fence: the election key Key still has the
// create revision CreateRev it had when this replica won (DESIGN.md §6).
type Fence struct {
	Key       string
	CreateRev int64
}

// EtcdConfig configures an Etcd store.
type EtcdConfig struct {
	// Prefix of every key (DefaultPrefix).
	Prefix string
	// Fence, if set, makes every write conditional on it (a leader's
	// store); nil writes unconditionally (a follower's reads, tests).
	Fence *Fence
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Renew, if set, renews a lease in place of the client's KeepAliveOnce
	// (a single embedded member renews in process: embedetcd.RenewLease).
	// An unknown lease must give an error etcd's client would give for it.
	Renew func(ctx context.Context, id LeaseID) (time.Duration, error)
}

// Etcd is the Store on etcd. It holds no state of its own but the
// client: a term's coordinator builds Leases, WriteBehind and its session
// watch (a Cache) on it.
type Etcd struct {
	cli   *clientv3.Client
	keys  Keys
	renew func(ctx context.Context, id LeaseID) (time.Duration, error)
	cmps  []clientv3.Cmp
	lg    *slog.Logger
}

var _ Store = (*Etcd)(nil)

// NewEtcd returns the Store on cli. Its requests go through cli.KV as it
// is when they are made (a test may wrap it: internal/etcdgate).
func NewEtcd(cli *clientv3.Client, cfg EtcdConfig) *Etcd {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Etcd{cli: cli, keys: Keys{Prefix: cfg.Prefix}, lg: cfg.Logger, renew: cfg.Renew}
	if f := cfg.Fence; f != nil {
		s.cmps = []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(f.Key), "=", f.CreateRev)}
	}
	return s
}

// Keys is the store's key layout.
func (s *Etcd) Keys() Keys { return s.keys }

// Client is the etcd client the store uses.
func (s *Etcd) Client() *clientv3.Client { return s.cli }

func (s *Etcd) op(o Op) clientv3.Op {
	key := s.keys.Abs(o.rel)
	switch o.kind {
	case opPut:
		if o.lease != NoLease {
			return clientv3.OpPut(key, string(o.val), clientv3.WithLease(clientv3.LeaseID(o.lease)))
		}
		return clientv3.OpPut(key, string(o.val))
	case opDeletePrefix:
		return clientv3.OpDelete(key, clientv3.WithPrefix())
	default:
		return clientv3.OpDelete(key)
	}
}

// Commit applies ops in one etcd transaction conditional on the fence.
func (s *Etcd) Commit(ctx context.Context, ops ...Op) error {
	if len(ops) == 0 {
		return nil
	}
	cops := make([]clientv3.Op, len(ops))
	for i, o := range ops {
		if err := checkOp(o); err != nil {
			return err
		}
		cops[i] = s.op(o)
	}
	resp, err := s.cli.Txn(ctx).If(s.cmps...).Then(cops...).Commit()
	if err != nil {
		return etcdErr("commit", err)
	}
	if !resp.Succeeded {
		return ErrFenced
	}
	return nil
}

// checkOp refuses an op built by no constructor or not encoded.
func checkOp(o Op) error {
	switch {
	case o.kind == 0:
		return fmt.Errorf("%w: zero Op", ErrRefused)
	case o.err != nil:
		return fmt.Errorf("%w: encode %s: %w", ErrRefused, o.rel, o.err)
	}
	return nil
}

// etcdErr wraps an etcd error with the sentinel it means.
func etcdErr(what string, err error) error {
	switch {
	case isLeaseNotFound(err):
		return fmt.Errorf("%w: %s: %w", ErrLeaseExpired, what, err)
	case errCode(err) == codes.InvalidArgument:
		// Too many ops, request too large, duplicate keys.
		return fmt.Errorf("%w: %s: %w", ErrRefused, what, err)
	}
	return fmt.Errorf("storage: %s: %w", what, err)
}

// CreateRoute puts the route if its key was never created, in one fenced
// transaction that reads it otherwise.
func (s *Etcd) CreateRoute(ctx context.Context, service, version string) (string, error) {
	key := s.keys.Route(service)
	resp, err := s.cli.Txn(ctx).If(s.cmps...).Then(clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(key, version)},
		[]clientv3.Op{clientv3.OpGet(key)})).Commit()
	if err != nil {
		return "", etcdErr("create route", err)
	}
	if !resp.Succeeded {
		return "", ErrFenced
	}
	if inner := resp.Responses[0].GetResponseTxn(); !inner.GetSucceeded() {
		if kvs := inner.GetResponses()[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			return string(kvs[0].Value), nil
		}
	}
	return version, nil
}

// Quarantine moves rec aside in one fenced transaction whose inner
// transaction checks rec's mod revision.
func (s *Etcd) Quarantine(ctx context.Context, rec Record) (string, error) {
	to := s.keys.Quarantined(rec.Key)
	resp, err := s.cli.Txn(ctx).If(s.cmps...).Then(clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(rec.Key), "=", rec.ModRev)},
		[]clientv3.Op{clientv3.OpPut(to, string(rec.Value)), clientv3.OpDelete(rec.Key)},
		nil)).Commit()
	if err != nil {
		return "", etcdErr("quarantine", err)
	}
	if !resp.Succeeded {
		return "", ErrFenced
	}
	if !resp.Responses[0].GetResponseTxn().GetSucceeded() {
		return "", fmt.Errorf("%w: %s", ErrChanged, rec.Key)
	}
	return to, nil
}

func (s *Etcd) records(prefix string, kvs []*mvccpb.KeyValue) []Record {
	out := make([]Record, len(kvs))
	for i, kv := range kvs {
		k := string(kv.Key)
		out[i] = Record{Key: k, Name: strings.TrimPrefix(k, prefix), Value: kv.Value, ModRev: kv.ModRevision, Lease: LeaseID(kv.Lease)}
	}
	return out
}

// Load reads the state in one etcd transaction.
func (s *Etcd) Load(ctx context.Context) (*State, error) {
	k := s.keys
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(k.Services(), clientv3.WithPrefix()),
		clientv3.OpGet(k.Routes(), clientv3.WithPrefix()),
		clientv3.OpGet(k.Sessions(), clientv3.WithPrefix()),
		clientv3.OpGet(k.SelfPreservation()),
		clientv3.OpGet(k.Updates(), clientv3.WithPrefix()),
		clientv3.OpGet(k.Pins(), clientv3.WithPrefix()),
		clientv3.OpGet(k.Analyses(), clientv3.WithPrefix()),
		clientv3.OpGet(k.Lanes(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, etcdErr("load", err)
	}
	kvs := func(i int) []*mvccpb.KeyValue { return resp.Responses[i].GetResponseRange().GetKvs() }
	st := &State{
		Rev:      resp.Header.Revision,
		Services: s.records(k.Services(), kvs(0)),
		Routes:   s.records(k.Routes(), kvs(1)),
		Sessions: s.records(k.Sessions(), kvs(2)),
		Updates:  s.records(k.Updates(), kvs(4)),
		Pins:     s.records(k.Pins(), kvs(5)),
		Analyses: s.records(k.Analyses(), kvs(6)),
		Lanes:    s.records(k.Lanes(), kvs(7)),
	}
	if sp := s.records(k.SelfPreservation(), kvs(3)); len(sp) > 0 {
		st.SelfPreservation = &sp[0]
	}
	return st, nil
}

// Txns reads one page of transaction records.
func (s *Etcd) Txns(ctx context.Context, after string, limit int) ([]Record, bool, error) {
	key, end := s.keys.Txns(), clientv3.GetPrefixRangeEnd(s.keys.Txns())
	if after != "" {
		key = s.keys.Txn(after) + "\x00"
	}
	resp, err := s.cli.Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return nil, false, etcdErr("read transaction records", err)
	}
	return s.records(s.keys.Txns(), resp.Kvs), resp.More && len(resp.Kvs) > 0, nil
}

// Quarantined lists the quarantine prefix, keys only.
func (s *Etcd) Quarantined(ctx context.Context, limit int) (int64, []string, error) {
	q := s.keys.Quarantine()
	resp, err := s.cli.Get(ctx, q, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return 0, nil, etcdErr("list quarantine", err)
	}
	keys := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		keys = append(keys, strings.TrimPrefix(string(kv.Key), q))
	}
	return resp.Count, keys, nil
}

// Grant grants an etcd lease of ttl rounded up to whole seconds.
func (s *Etcd) Grant(ctx context.Context, ttl time.Duration) (LeaseID, time.Duration, error) {
	secs := int64(math.Ceil(max(ttl, MinTTL).Seconds()))
	resp, err := s.cli.Grant(ctx, secs)
	if err == nil && resp.Error != "" {
		err = errors.New(resp.Error)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("storage: grant lease of %ds: %w", secs, err)
	}
	return LeaseID(resp.ID), time.Duration(resp.TTL) * time.Second, nil
}

// KeepAliveOnce refreshes an etcd lease once.
func (s *Etcd) KeepAliveOnce(ctx context.Context, id LeaseID) (time.Duration, error) {
	if s.renew != nil {
		ttl, err := s.renew(ctx, id)
		if err != nil {
			if isLeaseNotFound(err) {
				return 0, fmt.Errorf("%w: lease %016x", ErrLeaseExpired, int64(id))
			}
			return 0, fmt.Errorf("storage: keep-alive of lease %016x: %w", int64(id), err)
		}
		return ttl, nil
	}
	resp, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(id))
	if err != nil {
		if isLeaseNotFound(err) {
			return 0, fmt.Errorf("%w: lease %016x", ErrLeaseExpired, int64(id))
		}
		return 0, fmt.Errorf("storage: keep-alive of lease %016x: %w", int64(id), err)
	}
	return time.Duration(resp.TTL) * time.Second, nil
}

// TimeToLive asks etcd what is left of a lease.
func (s *Etcd) TimeToLive(ctx context.Context, id LeaseID) (time.Duration, error) {
	resp, err := s.cli.TimeToLive(ctx, clientv3.LeaseID(id))
	switch {
	case err != nil && isLeaseNotFound(err), err == nil && resp.TTL <= 0:
		return 0, fmt.Errorf("%w: lease %016x", ErrLeaseExpired, int64(id))
	case err != nil:
		return 0, fmt.Errorf("storage: time to live of lease %016x: %w", int64(id), err)
	}
	return time.Duration(resp.TTL) * time.Second, nil
}

// Revoke revokes an etcd lease.
func (s *Etcd) Revoke(ctx context.Context, id LeaseID) error {
	if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(id)); err != nil {
		if isLeaseNotFound(err) {
			return fmt.Errorf("%w: lease %016x", ErrLeaseExpired, int64(id))
		}
		return fmt.Errorf("storage: revoke lease %016x: %w", int64(id), err)
	}
	return nil
}

// Check is Check on the store's client.
func (s *Etcd) Check(ctx context.Context) error { return Check(ctx, s.cli) }

// WatchSessions follows the sessions prefix with a Cache (list-and-watch).
func (s *Etcd) WatchSessions(ctx context.Context, gone func(SessionGone)) (SessionWatch, error) {
	prefix := s.keys.Sessions()
	c := NewCache(s.cli, []string{prefix}, s.lg)
	c.OnEvent(func(ev Event) {
		if ev.Type != EventDelete || !strings.HasPrefix(ev.Key, prefix) {
			return
		}
		gone(SessionGone{Instance: strings.TrimPrefix(ev.Key, prefix), Lease: LeaseID(ev.Lease), Prev: ev.PrevValue, Rev: ev.Rev})
	})
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	return &etcdSessionWatch{c: c, keys: s.keys}, nil
}

type etcdSessionWatch struct {
	c    *Cache
	keys Keys
}

func (w *etcdSessionWatch) Lease(instance string) (LeaseID, bool) {
	ev, ok := w.c.Get(w.keys.Session(instance))
	return LeaseID(ev.Lease), ok
}

func (w *etcdSessionWatch) Close() { w.c.Close() }
