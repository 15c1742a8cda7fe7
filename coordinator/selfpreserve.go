package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// Self-preservation (DESIGN.md §7). When the leases of most sessions expire
// together, a partition around the coordinator is more likely than that
// many dead services: the sidecars are cut off, their transactions go on.
// The coordinator then keeps the expired sessions' transactions, as legacy
// (it did not hear what they did), queues the sessions' expiry, and pauses
// every switch (switchHoldLocked); BF calls that would wait for the switch
// run on the old version instead. A queued session that registers again
// takes its transactions back; one that has not within the grace after its
// expiry is dropped. The mode ends when the queue is empty, or when an
// operator ends it (which drops the whole queue).
//
// An expiry is known to be part of a mass expiry only once enough others
// have followed, so no expiry ends a session's transactions at once:
// while the mode could still start, an expired session is pending for the
// time the rest of a partition's expiries take to arrive (every lease runs
// out within one TTL of the partition), min(window, the longest session
// TTL). Its transactions block what they blocked; it is dropped as usual
// once that time is over, queued if the mode starts first.

// Defaults of the self-preservation settings (Config); the grace defaults
// to twice the window.
const (
	DefaultSelfPreservationWindow = 60 * time.Second
	DefaultSelfPreservationRatio  = 0.8
	DefaultSelfPreservationMin    = 3

	// selfPreservationTick is how often pending and queued expiries are
	// checked for the end of their wait.
	selfPreservationTick = 100 * time.Millisecond
)

// Reasons of sessions_dropped_total, and of "session dropped" logs, for
// sessions whose lease expired.
const (
	dropLeaseExpired  = "lease_expired"           // no mass expiry: an ordinary expiry
	dropGraceEnded    = "self_preservation_grace" // queued, did not come back in time
	dropOperatorEnded = "self_preservation_off"   // queued when an operator ended the mode
	dropReplaced      = "replaced"                // came back as another service or version
)

// ErrSelfPreservationInactive is returned (as FailedPrecondition) when an
// operator ends a self-preservation mode that is not active.
var ErrSelfPreservationInactive = errors.New("coordinator: self-preservation is not active")

func (c *Config) setSelfPreservationDefaults() {
	if c.SelfPreservationWindow <= 0 {
		c.SelfPreservationWindow = DefaultSelfPreservationWindow
	}
	if !(c.SelfPreservationRatio > 0 && c.SelfPreservationRatio <= 1) { // NaN too
		c.SelfPreservationRatio = DefaultSelfPreservationRatio
	}
	if c.SelfPreservationMin <= 0 {
		c.SelfPreservationMin = DefaultSelfPreservationMin
	}
	if c.SelfPreservationGrace <= 0 {
		c.SelfPreservationGrace = 2 * c.SelfPreservationWindow
	}
}

// selfPreservation owns the mode (DESIGN.md §7): the window of recent
// expiries, the expired sessions whose transactions it keeps, the mode
// itself and its store (selfpreserve_store.go, own goroutine). It decides
// under the event lock, on the lease expiries the session table reports,
// and uses the engine (ending or keeping an owner's transactions), the
// session table (owner slots), the orchestrator (held calls) and what
// spSide gives it of the Coordinator.
type selfPreservation struct {
	cfg     *Config
	lg      *slog.Logger
	metrics *metrics
	eng     *graph.Engine
	sess    *sessionTable
	orch    *orchestrator
	side    spSide

	active      bool
	since       time.Time
	activations uint64
	// recent are the lease expiries of the last window, oldest first, of
	// sessions that have not registered again; recentAt has the newest
	// expiry of each such instance. Entries whose instance registered
	// again (or expired again) are skipped when they leave the window.
	recent   []expiry
	recentAt map[string]time.Time
	// expired are the sessions whose lease expired and whose transactions
	// are kept: pending (the mode may still start) or queued.
	expired map[string]*expiredSession
	queued  int
	// maxTTL is the longest session TTL seen: pending expiries wait
	// min(window, maxTTL).
	maxTTL time.Duration

	// The stored mode (selfpreserve_store.go): gen counts the changes of
	// what the record holds, pins are the pins of queued sessions'
	// transactions to write again without a lease.
	gen   uint64
	pins  []storage.Op
	store spStore
}

// spSide is what self-preservation needs of the Coordinator: taking a
// session out of the live ones (stream, held calls, lease, routing), and,
// for its store's writer, the event lock and fenced etcd writes.
type spSide interface {
	unlistSessionLocked(s *session)
	lock()
	unlock()
	commit(ctx context.Context, ops ...storage.Op) error
}

type expiry struct {
	instance string
	at       time.Time
}

// expiredSession is a session whose lease expired, with its owner slot
// (and so its transactions) kept.
type expiredSession struct {
	s  *session
	at time.Time // when the expiry was seen
	// until is when its wait ends: pending, it is then dropped as an
	// ordinary expiry; queued, its extended grace is over.
	until  time.Time
	queued bool
	// restored: queued by a previous leader (or before a restart) and
	// resumed from etcd; s is a placeholder that owns no transaction.
	restored bool
}

// markUsed marks the services and versions of the expired sessions it
// keeps (forget.go).
func (sp *selfPreservation) markUsed(service func(graph.ServiceID), version func(graph.VersionID)) {
	for _, e := range sp.expired {
		service(e.s.svc)
		version(e.s.ver)
	}
}

// queuedBefore says whether the instance's expired session was queued by
// a previous leader (resumed from etcd).
func (sp *selfPreservation) queuedBefore(id string) bool {
	e := sp.expired[id]
	return e != nil && e.restored
}

func (sp *selfPreservation) init() {
	if sp.expired == nil {
		sp.expired = make(map[string]*expiredSession)
		sp.recentAt = make(map[string]time.Time)
	}
}

// noteTTL records the TTL of a session (see maxTTL).
func (sp *selfPreservation) noteTTL(ttl time.Duration) { sp.maxTTL = max(sp.maxTTL, ttl) }

// prune forgets the expiries older than the window.
func (sp *selfPreservation) prune(now time.Time, window time.Duration) {
	i := 0
	for ; i < len(sp.recent) && now.Sub(sp.recent[i].at) > window; i++ {
		e := sp.recent[i]
		if at, ok := sp.recentAt[e.instance]; ok && at.Equal(e.at) {
			delete(sp.recentAt, e.instance)
		}
	}
	if i > 0 {
		sp.recent = slices.Delete(sp.recent, 0, i)
	}
}

// leaseExpiredLocked handles a session whose lease etcd expired (seen by the
// session watch, the write-behind or a registration that found the lease
// gone). The session is over either way: it leaves the routing table and its
// stream is cut. Its transactions are kept if self-preservation is active or
// may still start (see the package comment above); otherwise they end now.
func (sp *selfPreservation) leaseExpiredLocked(s *session, now time.Time) {
	sp.init()
	id := s.rec.InstanceId
	sp.removeSessionLocked(s)
	sp.sess.resynced(id)                   // expired: it will not resync
	if old := sp.expired[id]; old != nil { // cannot happen: it registered again first
		sp.dropExpiredLocked(old, dropReplaced)
	}
	sp.prune(now, sp.cfg.SelfPreservationWindow)
	sp.recent = append(sp.recent, expiry{id, now})
	sp.recentAt[id] = now
	e := &expiredSession{s: s, at: now}
	switch {
	case sp.active:
		sp.expired[id] = e
		sp.queueLocked(e)
	case sp.sess.len()+len(sp.recentAt) < sp.cfg.SelfPreservationMin:
		// Too few sessions for a mass expiry: an ordinary one.
		sp.expired[id] = e
		sp.dropExpiredLocked(e, dropLeaseExpired)
	default:
		e.until = now.Add(min(sp.cfg.SelfPreservationWindow, sp.maxTTL))
		sp.expired[id] = e
		sp.lg.Debug("session lease expired; its transactions are kept until it is clear whether most sessions expire",
			"instance", id, "service", s.rec.Service, "lease", int64(s.lease), "until", e.until)
		if sp.massExpiryLocked() {
			sp.startSelfPreservationLocked(now)
		}
	}
}

// removeSessionLocked takes s out of the live sessions (and the routing
// table), cuts its stream and forgets its held calls and lease. Its owner
// slot, and so its transactions, stay.
func (sp *selfPreservation) removeSessionLocked(s *session) {
	s.expired = true
	sp.side.unlistSessionLocked(s)
}

// dropExpiredLocked ends the transactions of an expired session and frees
// its owner slot.
func (sp *selfPreservation) dropExpiredLocked(e *expiredSession, why string) {
	s := e.s
	if sp.expired[s.rec.InstanceId] == e {
		delete(sp.expired, s.rec.InstanceId)
		if e.queued {
			sp.queued--
			sp.spChangedLocked()
		}
	}
	ended := sp.eng.EndOwnedBy(s.owner)
	sp.sess.freeOwner(s.owner)
	sp.metrics.sessionsDropped.WithLabelValues(why).Inc()
	sp.lg.Info("session dropped", "instance", s.rec.InstanceId, "service", s.rec.Service,
		"lease", int64(s.lease), "reason", why, "ended_txns", len(ended), "expired_for", time.Since(e.at))
}

// massExpiryLocked says whether the expiries of the window make a mass
// expiry: at least min of them, and at least ratio of the sessions (those
// live now and those expired in the window).
func (sp *selfPreservation) massExpiryLocked() bool {
	n := len(sp.recentAt)
	total := sp.sess.len() + n
	// The epsilon keeps 4 of 5 at 0.8 from failing on rounding.
	return n >= sp.cfg.SelfPreservationMin && float64(n) >= sp.cfg.SelfPreservationRatio*float64(total)-1e-9
}

// queueLocked queues an expired session's expiry: its transactions become
// legacy and stay until it registers again or its grace ends.
func (sp *selfPreservation) queueLocked(e *expiredSession) {
	e.queued = true
	e.until = e.at.Add(sp.cfg.SelfPreservationGrace)
	sp.queued++
	sp.keepPinsLocked(e.s.owner)
	sp.spChangedLocked()
	n := sp.eng.MakeLegacyOwnedBy(e.s.owner)
	sp.lg.Info("session expiry queued: its transactions are kept as legacy", "instance", e.s.rec.InstanceId,
		"service", e.s.rec.Service, "lease", int64(e.s.lease), "legacy_txns", n, "until", e.until)
}

func (sp *selfPreservation) startSelfPreservationLocked(now time.Time) {
	sp.active, sp.since = true, now
	sp.activations++
	for _, e := range sp.expired {
		if !e.queued {
			sp.queueLocked(e)
		}
	}
	// BF calls held for the switch would wait for the mode: they run on
	// the old version (decideLocked does so for new ones).
	for u := range sp.orch.upd.actives() {
		sp.orch.releaseHeldLocked(u)
	}
	sp.lg.Warn("self-preservation started: most sessions' leases expired together, likely a partition around the coordinator; "+
		"their expiry is queued, their transactions are kept and every switch is paused",
		"expired", len(sp.recentAt), "sessions", sp.sess.len()+len(sp.recentAt), "queued", sp.queued,
		"window", sp.cfg.SelfPreservationWindow, "ratio", sp.cfg.SelfPreservationRatio,
		"min", sp.cfg.SelfPreservationMin, "grace", sp.cfg.SelfPreservationGrace)
}

// endSelfPreservationLocked ends the mode. The window starts afresh: the
// expiries that started it must not start it again. The caller moves the
// updates on (progressLocked) when it can send what that decides.
func (sp *selfPreservation) endSelfPreservationLocked(why string) {
	sp.lg.Warn("self-preservation ended", "reason", why, "lasted", time.Since(sp.since), "queued", sp.queued)
	sp.active, sp.since = false, time.Time{}
	sp.recent = nil
	clear(sp.recentAt)
	sp.spChangedLocked()
}

// reclaimExpiredLocked gives a registering instance whose lease expired its
// transactions back (DESIGN.md §7: "a queued session that re-registers is
// removed from the queue"): the new session takes the expired one's owner
// slot; its transactions are legacy, since the coordinator may have missed
// what they did, and the roots the sidecar no longer runs ended while it was
// away. It returns nil if the instance has no expired session, or one of
// another service or version (whose transactions end). gone counts the
// ended roots. The instance's expiry no longer counts toward a mass expiry.
func (sp *selfPreservation) reclaimExpiredLocked(rec *pb.SessionRecord, ttl time.Duration, roots []*pb.LiveRoot) (s *session, gone int) {
	sp.init()
	id := rec.InstanceId
	delete(sp.recentAt, id)
	e := sp.expired[id]
	if e == nil {
		return nil, 0
	}
	if e.s.rec.Service != rec.Service || e.s.rec.Version != rec.Version {
		sp.dropExpiredLocked(e, dropReplaced)
		sp.endIfQueueEmptyLocked("every queued session registered again or was replaced")
		return nil, 0
	}
	delete(sp.expired, id)
	if e.queued {
		sp.queued--
		sp.spChangedLocked()
	}
	s = &session{
		owner: e.s.owner,
		rec:   rec,
		svc:   sp.eng.Service(rec.Service),
		ver:   sp.eng.Version(rec.Version),
		lease: storage.LeaseID(rec.LeaseId),
		ttl:   ttl,
	}
	sp.sess.adopt(s)
	sp.noteTTL(ttl)
	gone = sp.endGoneRootsLocked(s, roots)
	n := sp.eng.MakeLegacyOwnedBy(s.owner)
	sp.lg.Info("expired session registered again: its transactions are back, as legacy", "instance", id,
		"service", rec.Service, "queued", e.queued, "away", time.Since(e.at), "legacy_txns", n, "ended", gone)
	sp.endIfQueueEmptyLocked("every queued session registered again")
	return s, gone
}

// expiredIdentity is the workload identity of the instance's expired
// session kept for its return ("" if none is kept).
func (sp *selfPreservation) expiredIdentity(instance string) string {
	if e := sp.expired[instance]; e != nil {
		return e.s.rec.Identity
	}
	return ""
}

// endGoneRootsLocked ends the roots owned by s that the sidecar no longer
// reports (transactions adopted from downstream calls are not its roots).
func (sp *selfPreservation) endGoneRootsLocked(s *session, roots []*pb.LiveRoot) int {
	want := make(map[string]struct{}, len(roots))
	for _, r := range roots {
		want[r.TxnId] = struct{}{}
	}
	var gone []string
	sp.eng.ForEachTxn(func(t graph.TxnInfo) bool {
		if t.Owner == s.owner && !t.Implicit {
			if _, ok := want[t.ID]; !ok {
				gone = append(gone, t.ID)
			}
		}
		return true
	})
	n := 0
	for _, id := range gone {
		if sp.eng.End(id) == nil {
			n++
		}
	}
	return n
}

// endIfQueueEmptyLocked ends an active mode whose queue is empty.
func (sp *selfPreservation) endIfQueueEmptyLocked(why string) {
	if sp.active && sp.queued == 0 {
		sp.endSelfPreservationLocked(why)
	}
}

// selfPreservationTickLocked drops the expired sessions whose wait is over;
// it reports whether it changed anything.
func (sp *selfPreservation) selfPreservationTickLocked(now time.Time) bool {
	sp.prune(now, sp.cfg.SelfPreservationWindow)
	changed := false
	for _, e := range sp.expired {
		if now.Before(e.until) {
			continue
		}
		why := dropLeaseExpired
		if e.queued {
			why = dropGraceEnded
		}
		sp.dropExpiredLocked(e, why)
		changed = true
	}
	if changed {
		sp.endIfQueueEmptyLocked("the grace of every queued session ended")
	}
	return changed
}

// selfPreservationTickAllLocked ends the waits of expired sessions (every
// selfPreservationTick).
func (sp *selfPreservation) selfPreservationTickAllLocked(now time.Time) {
	if len(sp.expired) == 0 && len(sp.recent) == 0 {
		return
	}
	if sp.selfPreservationTickLocked(now) {
		sp.orch.progressLocked() // an update may have waited for these transactions
	}
}

// selfPreservingLocked says whether self-preservation is active.
func (c *Coordinator) selfPreservingLocked() bool { return c.sp.active }

// selfPreservationHoldLocked is the switch hold of an active mode, or "".
func (c *Coordinator) selfPreservationHoldLocked() string {
	if !c.sp.active {
		return ""
	}
	return fmt.Sprintf("self-preservation: the expiry of %d sessions is queued (since %s)",
		c.sp.queued, c.sp.since.UTC().Format(time.RFC3339))
}

// selfPreservationLocked reports the mode and its settings.
func (sp *selfPreservation) selfPreservationLocked() *pb.SelfPreservation {
	sp.prune(time.Now(), sp.cfg.SelfPreservationWindow)
	out := &pb.SelfPreservation{
		Active:         sp.active,
		Window:         durationpb.New(sp.cfg.SelfPreservationWindow),
		Ratio:          sp.cfg.SelfPreservationRatio,
		MinCount:       uint32(sp.cfg.SelfPreservationMin),
		Grace:          durationpb.New(sp.cfg.SelfPreservationGrace),
		RecentExpiries: uint32(len(sp.recentAt)),
		Activations:    sp.activations,
	}
	if sp.active {
		out.Since = timestamppb.New(sp.since)
	}
	for id, e := range sp.expired {
		if e.queued {
			out.QueuedSessions = append(out.QueuedSessions, id)
		}
	}
	slices.Sort(out.QueuedSessions)
	return out
}

// endSelfPreservation ends the mode at an operator's request: every queued
// session is dropped as expired, its transactions end.
func (c *Coordinator) endSelfPreservation() (*pb.SelfPreservation, error) {
	c.mu.Lock()
	if !c.sp.active {
		c.mu.Unlock()
		return nil, ErrSelfPreservationInactive
	}
	n := 0
	for _, e := range c.sp.expired {
		c.sp.dropExpiredLocked(e, dropOperatorEnded)
		n++
	}
	c.sp.endSelfPreservationLocked(fmt.Sprintf("ended by an operator: %d queued sessions dropped", n))
	out := c.sp.selfPreservationLocked()
	c.orch.progressLocked()
	c.unlockAndSend()
	return out, nil
}

func (a admin) GetSelfPreservation(ctx context.Context, _ *pb.GetSelfPreservationRequest) (*pb.SelfPreservation, error) {
	c := a.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sp.selfPreservationLocked(), nil
}

func (a admin) EndSelfPreservation(ctx context.Context, _ *pb.EndSelfPreservationRequest) (*pb.SelfPreservation, error) {
	return a.c.endSelfPreservation()
}

// SelfPreservationReport is the mode as /health reports it.
type SelfPreservationReport struct {
	Active bool       `json:"active"`
	Since  *time.Time `json:"since,omitempty"`
	// Queued lists the sessions whose expiry is queued.
	Queued []string `json:"queued"`
}

func (sp *selfPreservation) selfPreservationReportLocked() SelfPreservationReport {
	r := SelfPreservationReport{Active: sp.active, Queued: []string{}}
	if sp.active {
		since := sp.since.UTC()
		r.Since = &since
	}
	for id, e := range sp.expired {
		if e.queued {
			r.Queued = append(r.Queued, id)
		}
	}
	slices.Sort(r.Queued)
	return r
}
