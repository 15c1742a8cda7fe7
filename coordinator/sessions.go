package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/identity"
	"github.com/coordinator/coordinator/storage"
)

// Limits on what a sidecar may send.
const (
	MaxTxnIDLen       = 256
	MaxDependencies   = 1024
	MaxLiveRoots      = 1 << 20
	MinHeartbeat      = 100 * time.Millisecond
	MaxHeartbeat      = 10 * time.Minute
	MaxAllowedMisses  = 100
	maxAddressLen     = 512
	registerTimeout   = 10 * time.Second
	resumeCheckBudget = 2 * time.Second
)

// session is one sidecar instance's session; guarded by Coordinator.mu.
type session struct {
	owner graph.Owner
	rec   *pb.SessionRecord
	svc   graph.ServiceID
	ver   graph.VersionID
	lease storage.LeaseID
	ttl   time.Duration
	// stream is the stream the session is attached to now, nil when
	// disconnected (the lease then runs until its TTL).
	stream *stream
	// ackedRev is the newest routing revision the session has applied.
	ackedRev uint64
	// snapRev is the revision of its stream's first snapshot.
	snapRev uint64
	// expired is set once its lease expired: it is no longer live, though
	// self-preservation may keep its owner slot (DESIGN.md §7).
	expired bool
	// quota is what the session used of its quotas (quota.go).
	quota sessionQuota
	// peer is where it registered from (peerOf), "" for a session restored
	// from etcd until it registers; the per-peer session quota counts it.
	// Written under both the event lock and the session table's mu.
	peer string
}

func validTxnID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: txn_id is empty", ErrInvalidArgument)
	}
	if len(id) > MaxTxnIDLen {
		return fmt.Errorf("%w: txn_id is %d bytes, more than %d", ErrInvalidArgument, len(id), MaxTxnIDLen)
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return fmt.Errorf("%w: txn_id %q has byte 0x%02x: only printable ASCII without spaces", ErrInvalidArgument, id, id[i])
		}
	}
	return nil
}

// invalid is an ErrInvalidArgument saying what was wrong.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidArgument}, args...)...)
}

// validateRegister checks a Register and fills defaults; the error says
// what was wrong.
func (c *Coordinator) validateRegister(r *pb.Register) (hb time.Duration, misses uint32, err error) {
	if err := storage.ValidName("instance_id", r.GetInstanceId()); err != nil {
		return 0, 0, fmt.Errorf("register: %w", err)
	}
	if err := storage.ValidName("service", r.GetService()); err != nil {
		return 0, 0, fmt.Errorf("register: %w", err)
	}
	if err := storage.ValidName("version", r.GetVersion()); err != nil {
		return 0, 0, fmt.Errorf("register: %w", err)
	}
	if len(r.GetAddress()) > maxAddressLen {
		return 0, 0, invalid("register: address is longer than %d bytes", maxAddressLen)
	}
	if len(r.GetDependencies()) > MaxDependencies {
		return 0, 0, invalid("register: %d dependencies, more than %d", len(r.GetDependencies()), MaxDependencies)
	}
	for _, d := range r.GetDependencies() {
		if err := storage.ValidName("dependency", d); err != nil {
			return 0, 0, fmt.Errorf("register: %w", err)
		}
	}
	if len(r.GetLiveRoots()) > MaxLiveRoots {
		return 0, 0, invalid("register: %d live roots, more than %d", len(r.GetLiveRoots()), MaxLiveRoots)
	}
	if n := len(r.GetLiveRoots()); n > c.cfg.MaxLiveTxnsPerSession {
		// Each becomes a live transaction the session owns.
		c.metrics.quotaRefusals[quotaSessionLiveTxns.label].Inc()
		return 0, 0, quotaExceeded(quotaSessionLiveTxns, c.cfg.MaxLiveTxnsPerSession, "register: %d live roots", n)
	}
	for _, lr := range r.GetLiveRoots() {
		if err := validTxnID(lr.GetTxnId()); err != nil {
			return 0, 0, fmt.Errorf("register: live root: %w", err)
		}
		if lr.GetSubId() == 0 {
			return 0, 0, invalid("register: live root %q: sub_id is 0", lr.GetTxnId())
		}
	}
	hb = c.cfg.DefaultHeartbeat
	if d := r.GetHeartbeatInterval(); d != nil {
		if err := d.CheckValid(); err != nil {
			return 0, 0, invalid("register: heartbeat_interval: %v", err)
		}
		hb = d.AsDuration()
		if hb < MinHeartbeat || hb > MaxHeartbeat {
			return 0, 0, invalid("register: heartbeat_interval %v is outside [%v, %v]", hb, MinHeartbeat, MaxHeartbeat)
		}
	}
	misses = r.GetAllowedMisses()
	if misses == 0 {
		misses = c.cfg.DefaultMisses
	}
	if misses > MaxAllowedMisses {
		return 0, 0, invalid("register: allowed_misses %d is more than %d", misses, MaxAllowedMisses)
	}
	return hb, misses, nil
}

// instanceIdentityLocked is the workload identity that holds an instance:
// its live session's (old), or, while self-preservation keeps an expired
// session of it for its return, that one's. "" when none does, or it
// registered without one.
func (c *Coordinator) instanceIdentityLocked(instance string, old *session) string {
	if old != nil {
		return old.rec.Identity
	}
	return c.sp.expiredIdentity(instance)
}

// register opens or resumes the session of r.InstanceId on stream st. Its
// etcd work (the lease, the session and service records, the route) is
// done first, between read-only looks at the state; then one locked
// section applies all of it. A registration that fails changes nothing
// here.
func (c *Coordinator) register(ctx context.Context, st *stream, r *pb.Register) (*session, *pb.Registered, error) {
	hb, misses, err := c.validateRegister(r)
	if err != nil {
		return nil, nil, err
	}
	who, hasWho := identity.FromContext(ctx)
	if hasWho {
		if err := c.cfg.IdentityPolicy.MayRegister(who, r.Service); err != nil {
			c.metrics.identity.WithLabelValues("service").Inc()
			c.lg.Warn("registration refused: the identity may not register as the service",
				"identity", who.Name, "instance", r.InstanceId, "service", r.Service)
			return nil, nil, fmt.Errorf("register: %w", err)
		}
	}
	defer c.regLocks.lock("instance/" + r.InstanceId)()
	ctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()

	ttl := c.sessionTTL(hb, misses)
	c.mu.Lock()
	// Until it is in memory, the sweep must not forget the service whose
	// records this registration writes.
	c.fg.registeringStart(r.Service)
	defer func() {
		c.mu.Lock()
		c.fg.registeringDone(r.Service)
		c.mu.Unlock()
	}()
	old := c.sess.get(r.InstanceId)
	from := peerOf(ctx)
	if err := c.admitSessionLocked(r.InstanceId, old, from); err != nil {
		c.mu.Unlock()
		return nil, nil, fmt.Errorf("register: %w", err)
	}
	if holder := c.instanceIdentityLocked(r.InstanceId, old); hasWho && holder != "" && holder != who.Name {
		c.mu.Unlock()
		c.metrics.identity.WithLabelValues("instance").Inc()
		c.lg.Warn("registration refused: another identity holds the instance",
			"identity", who.Name, "holder", holder, "instance", r.InstanceId, "service", r.Service)
		return nil, nil, fmt.Errorf("%w: register: instance %q is held by another workload identity; pick another instance id", ErrNotAllowed, r.InstanceId)
	}
	var oldLease storage.LeaseID
	var registeredAt *timestamppb.Timestamp
	same := false
	if old != nil {
		oldLease, registeredAt = old.lease, old.rec.RegisteredAt
		// Same service, version and lease TTL: a different TTL needs a new
		// lease (etcd cannot change a lease's TTL).
		same = old.rec.Service == r.Service && old.rec.Version == r.Version && old.ttl == ttl
	}
	c.mu.Unlock()

	lease := storage.NoLease
	resumed := false
	if old != nil && same {
		// Resume the session if its lease is still alive.
		kctx, kcancel := context.WithTimeout(ctx, resumeCheckBudget)
		_, err := c.store.KeepAliveOnce(kctx, oldLease)
		kcancel()
		switch {
		case err == nil:
			lease, resumed = oldLease, true
		case !errors.Is(err, storage.ErrLeaseExpired):
			// etcd did not answer: do not end a session that may be alive.
			return nil, nil, fmt.Errorf("%w: register: check the session's lease: %w", ErrUnavailable, err)
		}
	}
	if !resumed {
		if lease, err = c.leases.Grant(ctx, ttl); err != nil {
			return nil, nil, fmt.Errorf("%w: register: grant lease: %w", ErrUnavailable, err)
		}
	}
	rec := &pb.SessionRecord{
		InstanceId:        r.InstanceId,
		Service:           r.Service,
		Version:           r.Version,
		Address:           r.Address,
		LeaseId:           int64(lease),
		HeartbeatInterval: durationpb.New(hb),
		AllowedMisses:     misses,
		RegisteredAt:      timestamppb.Now(),
		Identity:          who.Name,
	}
	if resumed {
		rec.RegisteredAt = registeredAt
	}
	put := storage.PutSession(rec, lease)
	if err := put.Err(); err != nil {
		return nil, nil, fmt.Errorf("register: encode session: %w", err)
	}
	// endOldLocked ends the old session when a new one replaces it: a
	// different version under the same id, or a dead lease. A dead lease
	// is an expiry the session watch has not reported yet:
	// self-preservation decides what happens to its transactions (the new
	// session may take them).
	endOldLocked := func() {
		if old == nil || resumed || c.sess.get(r.InstanceId) != old {
			return
		}
		if same {
			c.sp.leaseExpiredLocked(old, time.Now())
		} else {
			c.dropSessionLocked(old, "replaced")
		}
	}
	revokeOld := func() {
		if old != nil && !same {
			rctx, rcancel := context.WithTimeout(context.Background(), resumeCheckBudget)
			defer rcancel()
			if err := c.store.Revoke(rctx, oldLease); err != nil {
				c.lg.Debug("revoke replaced session lease", "instance", r.InstanceId, "lease", int64(oldLease), "error", err)
			}
		}
	}
	stored := false // the session record may have been replaced in etcd
	fail := func(format string, err error) (*session, *pb.Registered, error) {
		if !resumed { // a lease nobody will use: do not let it linger until its TTL
			rctx, rcancel := context.WithTimeout(context.Background(), resumeCheckBudget)
			_ = c.leases.Revoke(rctx, lease)
			rcancel()
		}
		if stored {
			// The old session's record is gone (or may be): so is the
			// old session, as a registration that succeeded would end it.
			c.mu.Lock()
			endOldLocked()
			c.unlockAndSend()
			revokeOld()
		}
		return nil, nil, fmt.Errorf("%w: "+format, ErrUnavailable, err)
	}
	// The new lease's record replaces the old one's: revoking the old
	// lease (below, once the session is replaced here) deletes nothing
	// that the session watch would take for an expiry.
	stored = true
	if err := c.commit(ctx, put); err != nil {
		return fail("register: store session: %w", err)
	}
	// The service's records: its lock is held until they are applied, so
	// that concurrent registrations of the service merge their
	// dependencies.
	unlockService := c.regLocks.lock("service/" + r.Service)
	svc, err := c.storeService(ctx, r.Service, r.Dependencies, r.Version)
	if err != nil {
		unlockService()
		return fail("register: store service: %w", err)
	}

	c.mu.Lock()
	endOldLocked()
	c.applyServiceLocked(svc)
	s := c.sess.get(r.InstanceId)
	gone := 0 // roots of an expired session taken back that ended while it was away
	// A session a previous leader queued (self-preservation resumed from
	// etcd): its roots started before this coordinator led, as a restored
	// session's did.
	queuedBefore := false
	if s == nil || s.lease != lease {
		queuedBefore = c.sp.queuedBefore(r.InstanceId)
		if s, gone = c.sp.reclaimExpiredLocked(rec, ttl, r.LiveRoots); s == nil {
			s = c.addSessionLocked(rec, ttl)
		}
	} else {
		c.sess.setRecord(s, rec)
		s.ttl = ttl
	}
	if s.stream != nil && s.stream != st {
		s.stream.takeOver() // a newer stream of the same instance wins
	}
	c.sess.setPeer(s, from)
	c.sess.attach(s, st)
	s.ackedRev = 0 // a new stream: update mode counts from its own ack
	c.declareLocked(r.Service, r.Dependencies)
	c.routing.changed(s.svc, r.Service) // its endpoints
	s.snapRev = c.routing.snapshot(s)
	c.sess.awaitSnapshot(s)
	// The first registration of a session restored from etcd: its roots
	// started before this coordinator led (or restarted).
	restored := c.sess.resynced(r.InstanceId)
	resynced, ended := c.resyncLocked(s, r.LiveRoots, resumed, restored || queuedBefore)
	c.metrics.registrations.Inc()
	c.lg.Info("session registered", "instance", r.InstanceId, "service", r.Service, "version", r.Version,
		"lease", int64(lease), "ttl", ttl, "resumed", resumed, "resynced", resynced, "ended", ended)
	out := &pb.Registered{
		InstanceId: r.InstanceId,
		LeaseId:    int64(lease),
		Ttl:        durationpb.New(ttl),
		Resumed:    resumed,
		Resynced:   uint32(resynced),
		Ended:      uint32(ended + gone),
	}
	c.unlockAndSend()
	unlockService()
	revokeOld()
	return s, out, nil
}

// serviceState is what a registration stored for its service, to apply.
type serviceState struct {
	name  string
	deps  []string // the record's dependencies, nil if unchanged
	route string   // the default version, "" if it had one already
}

// storeService makes sure the service's record lists deps, and that the
// service has a route (its first registered version becomes the default),
// in etcd; applyServiceLocked applies what it returns. The caller holds the
// service's regLock from before this call until that apply.
func (c *Coordinator) storeService(ctx context.Context, svc string, deps []string, version string) (serviceState, error) {
	out := serviceState{name: svc}
	c.mu.Lock()
	have, known := c.cat.dependencies(svc)
	routed := c.cat.routed(c.eng.Service(svc))
	c.mu.Unlock()
	merged := slices.Clone(have)
	for _, d := range deps {
		if !slices.Contains(merged, d) {
			merged = append(merged, d)
		}
	}
	if !known || len(merged) != len(have) {
		slices.Sort(merged)
		put := storage.PutService(&pb.ServiceRecord{Name: svc, Dependencies: merged})
		if err := put.Err(); err != nil {
			return out, err
		}
		if err := c.commit(ctx, put); err != nil {
			return out, err
		}
		if merged == nil {
			merged = []string{}
		}
		out.deps = merged
	}
	if routed {
		return out, nil
	}
	if c.fencedFlag.Load() {
		return out, ErrFenced
	}
	route, err := c.store.CreateRoute(ctx, svc, version)
	if err != nil {
		return out, c.checkFence(err)
	}
	out.route = route
	return out, nil
}

// applyServiceLocked applies what storeService stored.
func (c *Coordinator) applyServiceLocked(s serviceState) {
	if s.deps != nil {
		c.cat.setRecord(s.name, s.deps)
	}
	if s.route != "" {
		id := c.eng.Service(s.name)
		c.cat.setRoute(id, s.name, c.eng.Version(s.route), s.route)
		c.routing.changed(id, s.name)
	}
}

// declareLocked adds the declared static edges svc -> deps.
func (c *Coordinator) declareLocked(svc string, deps []string) {
	from := c.eng.Service(svc)
	edges := make([]edge, 0, len(deps))
	for _, d := range deps {
		to := c.eng.Service(d)
		c.eng.AddEdge(from, to)
		edges = append(edges, edge{from, to})
	}
	// Declared now, not learned ones; new edges widen the scope of the
	// caller's sessions.
	c.routing.widen(c.cat.declare(edges))
}

// addSessionLocked installs a session under a fresh owner slot.
func (c *Coordinator) addSessionLocked(rec *pb.SessionRecord, ttl time.Duration) *session {
	s := &session{
		rec:   rec,
		svc:   c.eng.Service(rec.Service),
		ver:   c.eng.Version(rec.Version),
		lease: storage.LeaseID(rec.LeaseId),
		ttl:   ttl,
	}
	c.sess.add(s)
	c.sp.noteTTL(ttl)
	return s
}

// dropSessionLocked removes a session and ends the root transactions it owns.
func (c *Coordinator) dropSessionLocked(s *session, why string) int {
	c.sess.resynced(s.rec.InstanceId)
	ended := c.eng.EndOwnedBy(s.owner)
	c.unlistSessionLocked(s)
	c.sess.freeOwner(s.owner)
	c.metrics.sessionsDropped.WithLabelValues(why).Inc()
	c.lg.Info("session dropped", "instance", s.rec.InstanceId, "service", s.rec.Service,
		"lease", int64(s.lease), "reason", why, "ended_txns", len(ended))
	return len(ended)
}

// resyncLocked reconciles the roots a (re)registering sidecar says it runs
// with what the coordinator has for it. Roots it no longer runs ended while
// it was away; roots the coordinator does not know are added as legacy
// (pessimistic: we did not see what they used).
func (c *Coordinator) resyncLocked(s *session, roots []*pb.LiveRoot, resumed, restored bool) (resynced, ended int) {
	if resumed {
		want := make(map[string]struct{}, len(roots))
		for _, r := range roots {
			want[r.TxnId] = struct{}{}
		}
		var gone []string
		c.eng.ForEachTxn(func(t graph.TxnInfo) bool {
			if t.Owner == s.owner && !t.Implicit { // adopted ones are not its roots
				if _, ok := want[t.ID]; !ok {
					gone = append(gone, t.ID)
				}
			}
			return true
		})
		for _, id := range gone {
			if c.eng.End(id) == nil {
				ended++
			}
		}
	}
	// A root runs where it began: on this session's service and version.
	root := func() []graph.Use { return []graph.Use{{Service: s.svc, Version: s.ver}} }
	for _, r := range roots {
		if info, ok := c.eng.Txn(r.TxnId); ok {
			if info.Owner == s.owner {
				resynced++
				continue
			}
			if (info.Implicit && (restored || !resumed)) || info.Legacy {
				// Seen through downstream calls only, and it began before
				// this session (a new session after an expiry, or one
				// restored from etcd): what it did before is unknown, so
				// it is legacy. Or legacy already, restored from a record
				// written under the session that adopted it: the root's
				// session owns it from now on. What it used here stays;
				// its root's use, pins and old fill the rest.
				if c.eng.MakeLegacy(r.TxnId, s.owner, c.orch.legacyUsesLocked(r.TxnId, root())) {
					resynced++
				}
				continue
			}
			if info.Implicit {
				// Seen through downstream calls only: this is its Begin.
				if c.eng.Begin(r.TxnId, s.svc, s.ver, graph.SubID(r.SubId), s.owner) == nil {
					delete(c.implicit, r.TxnId)
					resynced++
				}
				continue
			}
			c.lg.Warn("resync: root owned by another session", "txn", r.TxnId, "instance", s.rec.InstanceId)
			continue
		}
		if c.eng.AddLegacy(r.TxnId, s.owner, c.orch.legacyUsesLocked(r.TxnId, root())) == nil {
			resynced++
		}
	}
	for _, r := range roots {
		c.orch.releaseBegunLocked(r.TxnId) // legacy or begun now
	}
	return resynced, ended
}

// onSessionGone reacts to session records vanishing: a lease expired (or a
// session was replaced). The session's transaction records went with the
// lease; its root transactions end, now or, if the expiry may be part of a
// mass expiry, later (leaseExpiredLocked).
func (c *Coordinator) onSessionGone(ev storage.SessionGone) {
	c.mu.Lock()
	s := c.sess.get(ev.Instance)
	if s == nil || ev.Lease != s.lease {
		c.mu.Unlock() // gone already, or an older lease of a session that re-registered
		return
	}
	c.sp.leaseExpiredLocked(s, time.Now())
	c.orch.progressLocked() // an update may have waited for this session
	c.unlockAndSend()
}

// onLeaseNotFound is called by the write-behind when a record's lease is gone.
func (c *Coordinator) onLeaseNotFound(id storage.LeaseID) {
	c.mu.Lock()
	for s := range c.sess.all() {
		if s.lease == id {
			c.sp.leaseExpiredLocked(s, time.Now())
			c.orch.progressLocked()
			break
		}
	}
	c.unlockAndSend()
}

// heartbeat refreshes the session's lease asynchronously and answers with the
// last completed refresh at once, in ack (empty, its Ttl set and zero). It
// does not take the event lock: a session's lease never changes, and the
// session table answers whether s is still its instance's session under
// its own lock.
func (c *Coordinator) heartbeat(s *session, ack *pb.HeartbeatAck) {
	c.metrics.heartbeats.Inc()
	if !c.sess.currentShared(s) {
		ack.Ttl = nil
		ack.Error = "session expired: register again"
		return
	}
	res := c.leases.Heartbeat(s.lease)
	ack.Ttl.Seconds, ack.Ttl.Nanos = int64(res.TTL/time.Second), int32(res.TTL%time.Second)
	ack.Pending = res.Pending
	if res.Err != nil {
		ack.Error = res.Err.Error()
	}
}

// unlistSessionLocked takes s out of the sessions, the routing table and
// the lease keep-alives, ends its stream and forgets its held calls; its
// owner slot is the caller's business.
func (c *Coordinator) unlistSessionLocked(s *session) {
	c.sess.unlist(s)
	if s.stream != nil {
		s.stream.takeOver()
		c.sess.attach(s, nil)
	}
	c.orch.dropHeldLocked(s, nil)
	c.leases.Forget(s.lease)
	c.routing.changed(s.svc, s.rec.Service) // its endpoint
}

// sessionTTL is the lease TTL of a session with heartbeat interval hb that
// may miss misses heartbeats: at least MinSessionTTL.
func (c *Coordinator) sessionTTL(hb time.Duration, misses uint32) time.Duration {
	return max(storage.SessionTTL(hb, int(misses)), c.cfg.MinSessionTTL)
}
