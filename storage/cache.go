package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// EventType says whether a key was put or deleted.
type EventType int

// Event types.
const (
	EventPut EventType = iota + 1
	EventDelete
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "PUT"
	case EventDelete:
		return "DELETE"
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is a change of one key, or (from Get and List) a key's current
// state as a Put.
type Event struct {
	Type  EventType
	Key   string
	Value []byte // nil for a Delete
	// Rev is the key's mod revision for a Put, the deleting revision for a
	// Delete (the relist's revision when the deletion was only seen by
	// relisting).
	Rev       int64
	CreateRev int64            // create revision of the key (of the deleted key for a Delete)
	Lease     clientv3.LeaseID // the key's lease (the deleted key's for a Delete)
	PrevValue []byte           // value before this event, nil if the key was absent
}

const (
	listPageSize    = 1000
	minWatchBackoff = 10 * time.Millisecond
	maxWatchBackoff = time.Second
)

var (
	errCompacted   = errors.New("storage: watch revision compacted")
	errWatchClosed = errors.New("storage: watch channel closed")
	cacheIDs       atomic.Int64
)

// Cache mirrors key prefixes of etcd in memory: it lists them, then watches
// from the list's revision+1 and applies every change, in revision order.
// When the watch cannot resume (its revision was compacted) it lists again
// and synthesizes Puts for keys that changed and Deletes for keys that
// vanished meanwhile, so the callback sees a consistent history. A key
// deleted by its lease expiring arrives as a Delete like any other.
//
// Several prefixes are watched with one watch over the range from the
// smallest to the end of the largest (keys between them are skipped), so
// that events of all prefixes come in one revision order: give prefixes
// that share a root, such as the coordinator's Keys.
type Cache struct {
	kv       clientv3.KV
	watcher  clientv3.Watcher
	prefixes []string // sorted, none a prefix of another
	lg       *slog.Logger
	id       string

	fns []func(Event)

	mu       sync.RWMutex
	data     []map[string]Event // one map per prefix
	rev      int64
	revc     chan struct{}      // closed and replaced when rev advances
	watchCtx context.Context    // of the current watch, for progress requests
	watchEnd context.CancelFunc // ends the current watch (tests)
	started  bool
	closed   bool

	ctx    context.Context
	cancel context.CancelFunc
	donec  chan struct{}
	loaded chan struct{}

	// testHookWatch runs before each watch is opened (tests).
	testHookWatch func()
}

// NewCache returns a Cache of the given key prefixes; call OnEvent, then
// Start. A nil lg means slog.Default().
func NewCache(cli *clientv3.Client, prefixes []string, lg *slog.Logger) *Cache {
	return newCache(cli.KV, cli.Watcher, prefixes, lg)
}

func newCache(kv clientv3.KV, w clientv3.Watcher, prefixes []string, lg *slog.Logger) *Cache {
	if lg == nil {
		lg = slog.Default()
	}
	ps := normalizePrefixes(prefixes)
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cache{
		kv:       kv,
		watcher:  w,
		prefixes: ps,
		lg:       lg.With("component", "cache"),
		id:       strconv.FormatInt(cacheIDs.Add(1), 10),
		data:     make([]map[string]Event, len(ps)),
		revc:     make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		donec:    make(chan struct{}),
		loaded:   make(chan struct{}),
	}
	for i := range c.data {
		c.data[i] = make(map[string]Event)
	}
	return c
}

// normalizePrefixes sorts, dedups and drops prefixes covered by another.
func normalizePrefixes(in []string) []string {
	ps := slices.Clone(in)
	slices.Sort(ps)
	out := ps[:0]
	for _, p := range ps {
		if len(out) > 0 && strings.HasPrefix(p, out[len(out)-1]) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// OnEvent registers fn to be called for every change, in revision order,
// one call at a time from the cache's goroutine: for the initial list (as
// Puts, in key order) and for what a relist finds. The cache already shows
// the change when fn runs. Register before Start. fn must not call
// WaitRevision or Close.
func (c *Cache) OnEvent(fn func(Event)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		panic("storage: Cache.OnEvent after Start")
	}
	c.fns = append(c.fns, fn)
}

// Start lists the prefixes and starts watching. It returns once the
// initial list is loaded (and its events delivered), or with ctx's error,
// the cache then closed. The cache runs until Close, not until ctx ends.
func (c *Cache) Start(ctx context.Context) error {
	c.mu.Lock()
	if c.started || c.closed {
		c.mu.Unlock()
		return fmt.Errorf("storage: cache started twice or closed: %w", ErrClosed)
	}
	c.started = true
	c.mu.Unlock()
	if len(c.prefixes) == 0 {
		return errors.New("storage: cache has no prefix")
	}
	go c.run()
	select {
	case <-c.loaded:
		return nil
	case <-ctx.Done():
		if isClosed(c.loaded) {
			return nil
		}
		c.Close()
		return fmt.Errorf("storage: cache initial list: %w", context.Cause(ctx))
	}
}

// Get returns the current state of key, as a Put.
func (c *Cache) Get(key string) (Event, bool) {
	i := c.prefixIndex(key)
	if i < 0 {
		return Event{}, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.data[i][key]
	return e, ok
}

// List returns the keys under prefix, sorted by key.
func (c *Cache) List(prefix string) []Event {
	var out []Event
	c.mu.RLock()
	for i, p := range c.prefixes {
		switch {
		case strings.HasPrefix(p, prefix):
			for _, e := range c.data[i] {
				out = append(out, e)
			}
		case strings.HasPrefix(prefix, p):
			for k, e := range c.data[i] {
				if strings.HasPrefix(k, prefix) {
					out = append(out, e)
				}
			}
		}
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b Event) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// Len returns the number of keys cached.
func (c *Cache) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n := 0
	for _, m := range c.data {
		n += len(m)
	}
	return n
}

// Revision returns the etcd revision the cache has applied: every change
// of the prefixes up to it is in the cache and was delivered.
func (c *Cache) Revision() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.rev
}

// WaitRevision waits until the cache has applied revision rev (e.g. the
// header revision of a write) or later. The revision moves with events of
// the watched prefixes and, when the writes were elsewhere, with progress
// notifications, which it requests from etcd while waiting.
func (c *Cache) WaitRevision(ctx context.Context, rev int64) error {
	backoff := 20 * time.Millisecond
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		c.mu.RLock()
		cur, revc, wctx, closed := c.rev, c.revc, c.watchCtx, c.closed
		c.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		if closed {
			return ErrClosed
		}
		if wctx != nil {
			// Same outgoing metadata, so the same watch stream.
			rctx, cancel := context.WithTimeout(wctx, 100*time.Millisecond)
			_ = c.watcher.RequestProgress(rctx)
			cancel()
		}
		if timer == nil {
			timer = time.NewTimer(backoff)
		} else {
			timer.Reset(backoff)
		}
		select {
		case <-revc:
		case <-timer.C:
			backoff = min(2*backoff, time.Second)
		case <-ctx.Done():
			return fmt.Errorf("storage: wait for revision %d (cache at %d): %w", rev, cur, context.Cause(ctx))
		}
	}
}

// Close stops the watch and waits for the cache's goroutine (and so for
// any callback running) to return.
func (c *Cache) Close() {
	c.mu.Lock()
	c.closed = true
	started := c.started
	close(c.revc) // wake WaitRevision
	c.revc = make(chan struct{})
	c.mu.Unlock()
	c.cancel()
	if started {
		<-c.donec
	}
}

func (c *Cache) prefixIndex(key string) int {
	// The prefixes are sorted and none covers another: the candidate is
	// the last prefix <= key.
	i, found := slices.BinarySearch(c.prefixes, key)
	if found {
		return i
	}
	if i > 0 && strings.HasPrefix(key, c.prefixes[i-1]) {
		return i - 1
	}
	return -1
}

func (c *Cache) run() {
	defer close(c.donec)
	needList := true
	backoff := minWatchBackoff
	for c.ctx.Err() == nil {
		if needList {
			if err := c.relist(); err != nil {
				if c.ctx.Err() == nil {
					c.lg.Warn("list failed, retrying", "backoff", backoff, "error", err)
				}
				c.sleep(&backoff)
				continue
			}
			needList = false
			backoff = minWatchBackoff
		}
		err := c.watch()
		switch {
		case c.ctx.Err() != nil:
			return
		case errors.Is(err, errCompacted):
			c.lg.Info("watch revision compacted, relisting", "rev", c.Revision()+1)
			needList = true
		default:
			c.lg.Info("watch ended, resuming", "rev", c.Revision()+1, "error", err)
			c.sleep(&backoff)
		}
	}
}

func (c *Cache) sleep(backoff *time.Duration) {
	t := time.NewTimer(*backoff)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.ctx.Done():
	}
	*backoff = min(2**backoff, maxWatchBackoff)
}

// relist reads every prefix at one revision, replaces the cache with it
// and delivers the differences.
func (c *Cache) relist() error {
	fresh := make([]map[string]Event, len(c.prefixes))
	var rev int64
	for i, p := range c.prefixes {
		m, r, err := c.listPrefix(p, rev)
		if err != nil {
			return err
		}
		fresh[i], rev = m, r
	}

	var evs []Event
	c.mu.Lock()
	first := !isClosed(c.loaded)
	for i := range c.prefixes {
		old, cur := c.data[i], fresh[i]
		for k, e := range cur {
			o, had := old[k]
			if had && o.Rev == e.Rev {
				continue
			}
			if had {
				e.PrevValue = o.Value
			}
			evs = append(evs, e)
		}
		for k, o := range old {
			if _, ok := cur[k]; !ok {
				evs = append(evs, Event{Type: EventDelete, Key: k, Rev: rev, CreateRev: o.CreateRev, Lease: o.Lease, PrevValue: o.Value})
			}
		}
		c.data[i] = cur
	}
	c.mu.Unlock()

	slices.SortFunc(evs, func(a, b Event) int { return strings.Compare(a.Key, b.Key) })
	c.deliver(evs)
	c.advance(rev)
	if first {
		close(c.loaded)
		c.lg.Info("cache loaded", "keys", c.Len(), "rev", rev)
	} else {
		c.lg.Info("cache relisted", "keys", c.Len(), "rev", rev, "changes", len(evs))
	}
	return nil
}

// listPrefix reads prefix p at revision rev (0: now), in pages.
func (c *Cache) listPrefix(p string, rev int64) (map[string]Event, int64, error) {
	m := make(map[string]Event)
	end := clientv3.GetPrefixRangeEnd(p)
	key := p
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		ctx, cancel := context.WithTimeout(c.ctx, DefaultTxnTimeout)
		resp, err := c.kv.Get(ctx, key, opts...)
		cancel()
		if err != nil {
			return nil, 0, fmt.Errorf("storage: list %q: %w", p, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			k := string(kv.Key)
			m[k] = Event{Type: EventPut, Key: k, Value: kv.Value, Rev: kv.ModRevision, CreateRev: kv.CreateRevision, Lease: clientv3.LeaseID(kv.Lease)}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return m, rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// watch follows the prefixes from the cache's revision+1 until the watch
// ends, returning why.
func (c *Cache) watch() error {
	if c.testHookWatch != nil {
		c.testHookWatch()
	}
	// Require a leader, so a member cut off from its cluster ends the
	// watch instead of going silent; and give the cache its own gRPC
	// watch stream, so that its progress requests reach only it.
	wctx := metadata.AppendToOutgoingContext(clientv3.WithRequireLeader(c.ctx), "coordinator-cache", c.id)
	wctx, cancel := context.WithCancel(wctx)
	defer cancel()

	from := c.Revision() + 1
	key, opts := c.prefixes[0], []clientv3.OpOption{
		clientv3.WithRange(clientv3.GetPrefixRangeEnd(c.prefixes[len(c.prefixes)-1])),
		clientv3.WithRev(from), clientv3.WithPrevKV(), clientv3.WithProgressNotify(),
	}
	ch := c.watcher.Watch(wctx, key, opts...)
	c.mu.Lock()
	c.watchCtx, c.watchEnd = wctx, cancel
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.watchCtx, c.watchEnd = nil, nil
		c.mu.Unlock()
	}()

	for resp := range ch {
		if resp.CompactRevision != 0 {
			return fmt.Errorf("%w: compacted at %d, wanted %d", errCompacted, resp.CompactRevision, from)
		}
		if err := resp.Err(); err != nil {
			return err
		}
		if resp.IsProgressNotify() {
			c.advance(resp.Header.Revision)
			continue
		}
		if len(resp.Events) == 0 {
			continue
		}
		c.deliver(c.apply(resp.Events))
		// A response holds whole revisions: all changes up to its last
		// event's revision are in. (Its header revision may be later than
		// events still to come, so it is not used.)
		c.advance(resp.Events[len(resp.Events)-1].Kv.ModRevision)
	}
	return errWatchClosed
}

// apply updates the cache with watch events and returns them as Events.
func (c *Cache) apply(wevs []*clientv3.Event) []Event {
	evs := make([]Event, 0, len(wevs))
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, we := range wevs {
		k := string(we.Kv.Key)
		i := c.prefixIndex(k)
		if i < 0 {
			continue // between two prefixes
		}
		old, had := c.data[i][k]
		var e Event
		switch we.Type {
		case mvccpb.PUT:
			e = Event{Type: EventPut, Key: k, Value: we.Kv.Value, Rev: we.Kv.ModRevision, CreateRev: we.Kv.CreateRevision, Lease: clientv3.LeaseID(we.Kv.Lease)}
			c.data[i][k] = e
		case mvccpb.DELETE:
			e = Event{Type: EventDelete, Key: k, Rev: we.Kv.ModRevision}
			if had {
				e.CreateRev, e.Lease = old.CreateRev, old.Lease
			}
			delete(c.data[i], k)
		default:
			continue
		}
		switch {
		case we.PrevKv != nil:
			e.PrevValue = we.PrevKv.Value
			if e.Type == EventDelete {
				e.CreateRev, e.Lease = we.PrevKv.CreateRevision, clientv3.LeaseID(we.PrevKv.Lease)
			}
		case had:
			e.PrevValue = old.Value
		}
		evs = append(evs, e)
	}
	return evs
}

func (c *Cache) deliver(evs []Event) {
	for _, e := range evs {
		for _, fn := range c.fns {
			fn(e)
		}
	}
}

func (c *Cache) advance(rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rev <= c.rev {
		return
	}
	c.rev = rev
	close(c.revc)
	c.revc = make(chan struct{})
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
