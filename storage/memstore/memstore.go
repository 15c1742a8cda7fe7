// Package memstore is a storage.Store in memory, for component tests of
// the coordinator that claim nothing about durability: nothing survives
// the process. It has the semantics of the etcd store that the
// conformance suite (storage/storetest) checks on both: one revision per
// transaction, atomic and fenced commits, leases with a TTL that expire by
// themselves (deleting the records attached to them, which the session
// watch reports), keep-alives and revocation, create-if-absent, paging,
// and quarantine. Fence makes every later write fail as a deposed
// leader's would; SetUnavailable makes it fail as an unreachable etcd.
package memstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coordinator/coordinator/storage"
)

// Options configure a Store.
type Options struct {
	// Prefix of every key (storage.DefaultPrefix).
	Prefix string
	// MinTTL is the shortest lease granted (storage.MinTTL, as etcd).
	MinTTL time.Duration
	// MaxOps is the most ops one commit may hold (storage.DefaultMaxOps,
	// as etcd's default --max-txn-ops).
	MaxOps int
}

// Store is a storage.Store in memory. Call Close when done (it stops
// the lease timers and session watches).
type Store struct {
	keys storage.Keys
	opts Options

	mu        sync.Mutex
	rev       int64
	kvs       map[string]*kv // by full key
	leases    map[storage.LeaseID]*lease
	nextLease storage.LeaseID
	fenced    bool
	unavail   error
	watches   []*watch
	closed    bool
}

type kv struct {
	val         []byte
	create, mod int64
	lease       storage.LeaseID
}

type lease struct {
	ttl      time.Duration
	deadline time.Time
	timer    *time.Timer
	keys     map[string]struct{}
}

var _ storage.Store = (*Store)(nil)

// New returns an empty store.
func New(opts Options) *Store {
	if opts.MinTTL <= 0 {
		opts.MinTTL = storage.MinTTL
	}
	if opts.MaxOps <= 0 {
		opts.MaxOps = storage.DefaultMaxOps
	}
	return &Store{
		keys:      storage.Keys{Prefix: opts.Prefix},
		opts:      opts,
		kvs:       make(map[string]*kv),
		leases:    make(map[storage.LeaseID]*lease),
		nextLease: 0x1000,
	}
}

// Close stops the lease timers and the session watches; later calls fail
// with storage.ErrClosed.
func (s *Store) Close() {
	s.mu.Lock()
	s.closed = true
	for _, l := range s.leases {
		l.timer.Stop()
	}
	ws := s.watches
	s.watches = nil
	s.mu.Unlock()
	for _, w := range ws {
		w.Close()
	}
}

// Fence makes every later write of the store fail with storage.ErrFenced,
// as a leader's whose election key another replica now holds.
func (s *Store) Fence() {
	s.mu.Lock()
	s.fenced = true
	s.mu.Unlock()
}

// SetUnavailable makes every later call fail with an error wrapping
// storage.ErrUnavailable and err (nil: available again), as a store that
// cannot be reached.
func (s *Store) SetUnavailable(err error) {
	s.mu.Lock()
	s.unavail = err
	s.mu.Unlock()
}

// Get returns the record at key (a full key) as stored now: for tests
// that look into the store.
func (s *Store) Get(key string) (val []byte, lease storage.LeaseID, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.kvs[key]
	if e == nil {
		return nil, 0, false
	}
	return slices.Clone(e.val), e.lease, true
}

// Count returns how many records are stored under prefix (a full key).
func (s *Store) Count(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k := range s.kvs {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

// Keys is the store's key layout.
func (s *Store) Keys() storage.Keys { return s.keys }

// checkLocked fails a call on a closed or unavailable store.
func (s *Store) checkLocked(ctx context.Context) error {
	switch {
	case s.closed:
		return storage.ErrClosed
	case s.unavail != nil:
		return fmt.Errorf("%w: %w", storage.ErrUnavailable, s.unavail)
	}
	return ctx.Err()
}

// Commit applies ops at one new revision, all or none.
func (s *Store) Commit(ctx context.Context, ops ...storage.Op) error {
	if len(ops) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkLocked(ctx); err != nil {
		return err
	}
	if s.fenced {
		return storage.ErrFenced
	}
	if len(ops) > s.opts.MaxOps {
		return fmt.Errorf("%w: %d ops, more than %d", storage.ErrRefused, len(ops), s.opts.MaxOps)
	}
	for i, o := range ops {
		switch {
		case o.IsZero():
			return fmt.Errorf("%w: zero Op", storage.ErrRefused)
		case o.Err() != nil:
			return fmt.Errorf("%w: encode %s: %w", storage.ErrRefused, o.Key(), o.Err())
		}
		for _, p := range ops[:i] {
			if overlaps(o, p) {
				return fmt.Errorf("%w: two ops on %s", storage.ErrRefused, o.Key())
			}
		}
		if o.IsPut() && o.Lease() != storage.NoLease && s.leases[o.Lease()] == nil {
			return fmt.Errorf("%w: lease %016x", storage.ErrLeaseExpired, int64(o.Lease()))
		}
	}
	s.rev++
	var gone []storage.SessionGone
	for _, o := range ops {
		key := s.keys.Abs(o.Key())
		switch {
		case o.IsPut():
			s.putLocked(key, o.Value(), o.Lease())
		case o.IsPrefix():
			for k := range s.kvs {
				if strings.HasPrefix(k, key) {
					gone = s.deleteLocked(k, gone)
				}
			}
		default:
			gone = s.deleteLocked(key, gone)
		}
	}
	s.notifyLocked(gone)
	return nil
}

// overlaps reports whether two ops of one commit touch a common key, which
// etcd refuses.
func overlaps(a, b storage.Op) bool {
	ka, kb := a.Key(), b.Key()
	pa, pb := a.IsPrefix(), b.IsPrefix()
	switch {
	case pa && pb:
		return strings.HasPrefix(ka, kb) || strings.HasPrefix(kb, ka)
	case pa:
		return strings.HasPrefix(kb, ka)
	case pb:
		return strings.HasPrefix(ka, kb)
	}
	return ka == kb
}

func (s *Store) putLocked(key string, val []byte, id storage.LeaseID) {
	e := s.kvs[key]
	if e == nil {
		e = &kv{create: s.rev}
		s.kvs[key] = e
	} else if e.lease != id {
		if l := s.leases[e.lease]; l != nil {
			delete(l.keys, key)
		}
	}
	e.val, e.mod, e.lease = slices.Clone(val), s.rev, id
	if l := s.leases[id]; l != nil {
		l.keys[key] = struct{}{}
	}
}

// deleteLocked deletes key at the current revision, noting a session
// record's deletion in gone.
func (s *Store) deleteLocked(key string, gone []storage.SessionGone) []storage.SessionGone {
	e := s.kvs[key]
	if e == nil {
		return gone
	}
	delete(s.kvs, key)
	if l := s.leases[e.lease]; l != nil {
		delete(l.keys, key)
	}
	if inst, ok := strings.CutPrefix(key, s.keys.Sessions()); ok {
		gone = append(gone, storage.SessionGone{Instance: inst, Lease: e.lease, Prev: e.val, Rev: s.rev})
	}
	return gone
}

// CreateRoute puts the route unless the key exists.
func (s *Store) CreateRoute(ctx context.Context, service, version string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkLocked(ctx); err != nil {
		return "", err
	}
	if s.fenced {
		return "", storage.ErrFenced
	}
	key := s.keys.Route(service)
	if e := s.kvs[key]; e != nil {
		return string(e.val), nil
	}
	s.rev++
	s.putLocked(key, []byte(version), storage.NoLease)
	return version, nil
}

// Quarantine moves rec aside if its mod revision is unchanged.
func (s *Store) Quarantine(ctx context.Context, rec storage.Record) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkLocked(ctx); err != nil {
		return "", err
	}
	if s.fenced {
		return "", storage.ErrFenced
	}
	e := s.kvs[rec.Key]
	if e == nil || e.mod != rec.ModRev {
		return "", fmt.Errorf("%w: %s", storage.ErrChanged, rec.Key)
	}
	to := s.keys.Quarantined(rec.Key)
	s.rev++
	val := e.val
	gone := s.deleteLocked(rec.Key, nil)
	s.putLocked(to, val, storage.NoLease)
	s.notifyLocked(gone)
	return to, nil
}

// listLocked returns the records under prefix, in key order.
func (s *Store) listLocked(prefix string) []storage.Record {
	var out []storage.Record
	for k, e := range s.kvs {
		if strings.HasPrefix(k, prefix) {
			out = append(out, storage.Record{Key: k, Name: strings.TrimPrefix(k, prefix),
				Value: slices.Clone(e.val), ModRev: e.mod, Lease: e.lease})
		}
	}
	slices.SortFunc(out, func(a, b storage.Record) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Load reads the state at the current revision.
func (s *Store) Load(ctx context.Context) (*storage.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkLocked(ctx); err != nil {
		return nil, err
	}
	k := s.keys
	st := &storage.State{
		Rev:      s.rev,
		Services: s.listLocked(k.Services()),
		Routes:   s.listLocked(k.Routes()),
		Sessions: s.listLocked(k.Sessions()),
		Updates:  s.listLocked(k.Updates()),
		Pins:     s.listLocked(k.Pins()),
		Analyses: s.listLocked(k.Analyses()),
		Lanes:    s.listLocked(k.Lanes()),
	}
	if e := s.kvs[k.SelfPreservation()]; e != nil {
		st.SelfPreservation = &storage.Record{Key: k.SelfPreservation(), Value: slices.Clone(e.val), ModRev: e.mod, Lease: e.lease}
	}
	return st, nil
}

// Txns returns a page of transaction records.
func (s *Store) Txns(ctx context.Context, after string, limit int) ([]storage.Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkLocked(ctx); err != nil {
		return nil, false, err
	}
	all := s.listLocked(s.keys.Txns())
	i := 0
	if after != "" {
		i, _ = slices.BinarySearchFunc(all, after, func(r storage.Record, name string) int {
			return strings.Compare(r.Name, name)
		})
		if i < len(all) && all[i].Name == after {
			i++
		}
	}
	all = all[i:]
	if limit > 0 && len(all) > limit {
		return all[:limit], true, nil
	}
	return all, false, nil
}

// Quarantined lists the quarantine prefix.
func (s *Store) Quarantined(ctx context.Context, limit int) (int64, []string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkLocked(ctx); err != nil {
		return 0, nil, err
	}
	recs := s.listLocked(s.keys.Quarantine())
	keys := make([]string, 0, min(len(recs), limit))
	for _, r := range recs[:min(len(recs), limit)] {
		keys = append(keys, r.Name)
	}
	return int64(len(recs)), keys, nil
}

// Grant creates a lease of ttl (at least MinTTL, whole seconds).
func (s *Store) Grant(ctx context.Context, ttl time.Duration) (storage.LeaseID, time.Duration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkLocked(ctx); err != nil {
		return 0, 0, err
	}
	ttl = time.Duration(math.Ceil(max(ttl, s.opts.MinTTL).Seconds())) * time.Second
	s.nextLease++
	id := s.nextLease
	l := &lease{ttl: ttl, deadline: time.Now().Add(ttl), keys: make(map[string]struct{})}
	l.timer = time.AfterFunc(ttl, func() { s.expire(id) })
	s.leases[id] = l
	return id, ttl, nil
}

// expire ends lease id if its deadline passed (else its timer was reset).
func (s *Store) expire(id storage.LeaseID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.leases[id]
	if l == nil || s.closed {
		return
	}
	if d := time.Until(l.deadline); d > 0 {
		l.timer.Reset(d)
		return
	}
	s.revokeLocked(id, l)
}

func (s *Store) revokeLocked(id storage.LeaseID, l *lease) {
	l.timer.Stop()
	delete(s.leases, id)
	if len(l.keys) == 0 {
		return
	}
	s.rev++
	var gone []storage.SessionGone
	keys := make([]string, 0, len(l.keys))
	for k := range l.keys {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		gone = s.deleteLocked(k, gone)
	}
	s.notifyLocked(gone)
}

func (s *Store) leaseLocked(ctx context.Context, id storage.LeaseID) (*lease, error) {
	if err := s.checkLocked(ctx); err != nil {
		return nil, err
	}
	l := s.leases[id]
	if l == nil {
		return nil, fmt.Errorf("%w: lease %016x", storage.ErrLeaseExpired, int64(id))
	}
	return l, nil
}

// KeepAliveOnce refreshes lease id to its full TTL.
func (s *Store) KeepAliveOnce(ctx context.Context, id storage.LeaseID) (time.Duration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.leaseLocked(ctx, id)
	if err != nil {
		return 0, err
	}
	l.deadline = time.Now().Add(l.ttl)
	return l.ttl, nil
}

// TimeToLive returns what is left of lease id.
func (s *Store) TimeToLive(ctx context.Context, id storage.LeaseID) (time.Duration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.leaseLocked(ctx, id)
	if err != nil {
		return 0, err
	}
	return max(time.Until(l.deadline), time.Nanosecond), nil
}

// Revoke ends lease id and deletes its records.
func (s *Store) Revoke(ctx context.Context, id storage.LeaseID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, err := s.leaseLocked(ctx, id)
	if err != nil {
		return err
	}
	s.revokeLocked(id, l)
	return nil
}

// Check fails while the store is unavailable or closed.
func (s *Store) Check(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkLocked(ctx); err != nil {
		if errors.Is(err, storage.ErrUnavailable) {
			return err
		}
		return fmt.Errorf("%w: %w", storage.ErrUnavailable, err)
	}
	return nil
}

// WatchSessions reports deleted session records, in revision order, from
// a goroutine of its own.
func (s *Store) WatchSessions(ctx context.Context, gone func(storage.SessionGone)) (storage.SessionWatch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkLocked(ctx); err != nil {
		return nil, err
	}
	w := &watch{s: s, fn: gone, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	s.watches = append(s.watches, w)
	go w.run()
	return w, nil
}

func (s *Store) notifyLocked(gone []storage.SessionGone) {
	if len(gone) == 0 {
		return
	}
	for _, w := range s.watches {
		w.push(gone)
	}
}

type watch struct {
	s    *Store
	fn   func(storage.SessionGone)
	mu   sync.Mutex
	q    []storage.SessionGone
	kick chan struct{}
	stop chan struct{}
	once sync.Once
	done chan struct{}
}

func (w *watch) push(evs []storage.SessionGone) {
	w.mu.Lock()
	w.q = append(w.q, evs...)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *watch) run() {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		case <-w.kick:
		}
		for {
			w.mu.Lock()
			if len(w.q) == 0 {
				w.mu.Unlock()
				break
			}
			ev := w.q[0]
			w.q = w.q[1:]
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			default:
			}
			w.fn(ev)
		}
	}
}

// Lease returns the lease of instance's session record now.
func (w *watch) Lease(instance string) (storage.LeaseID, bool) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	e := w.s.kvs[w.s.keys.Session(instance)]
	if e == nil {
		return 0, false
	}
	return e.lease, true
}

// Close stops the watch and waits for a call in progress.
func (w *watch) Close() {
	w.once.Do(func() {
		close(w.stop)
		w.s.mu.Lock()
		w.s.watches = slices.DeleteFunc(w.s.watches, func(x *watch) bool { return x == w })
		w.s.mu.Unlock()
	})
	<-w.done
}
