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

// selfPreservation is the mode's state; guarded by Coordinator.mu.
type selfPreservation struct {
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
func (c *Coordinator) leaseExpiredLocked(s *session, now time.Time) {
	sp := &c.sp
	sp.init()
	id := s.rec.InstanceId
	c.removeSessionLocked(s)
	delete(c.resyncWait, id)               // expired: it will not resync
	if old := sp.expired[id]; old != nil { // cannot happen: it registered again first
		c.dropExpiredLocked(old, dropReplaced)
	}
	sp.prune(now, c.cfg.SelfPreservationWindow)
	sp.recent = append(sp.recent, expiry{id, now})
	sp.recentAt[id] = now
	e := &expiredSession{s: s, at: now}
	switch {
	case sp.active:
		sp.expired[id] = e
		c.queueLocked(e)
	case len(c.sessions)+len(sp.recentAt) < c.cfg.SelfPreservationMin:
		// Too few sessions for a mass expiry: an ordinary one.
		sp.expired[id] = e
		c.dropExpiredLocked(e, dropLeaseExpired)
	default:
		e.until = now.Add(min(c.cfg.SelfPreservationWindow, sp.maxTTL))
		sp.expired[id] = e
		c.lg.Debug("session lease expired; its transactions are kept until it is clear whether most sessions expire",
			"instance", id, "service", s.rec.Service, "lease", int64(s.lease), "until", e.until)
		if c.massExpiryLocked() {
			c.startSelfPreservationLocked(now)
		}
	}
}

// removeSessionLocked takes s out of the live sessions (and the routing
// table), cuts its stream and forgets its held calls and lease. Its owner
// slot, and so its transactions, stay.
func (c *Coordinator) removeSessionLocked(s *session) {
	s.expired = true
	c.unlistSessionLocked(s)
}

// dropExpiredLocked ends the transactions of an expired session and frees
// its owner slot.
func (c *Coordinator) dropExpiredLocked(e *expiredSession, why string) {
	sp := &c.sp
	s := e.s
	if sp.expired[s.rec.InstanceId] == e {
		delete(sp.expired, s.rec.InstanceId)
		if e.queued {
			sp.queued--
			c.spChangedLocked()
		}
	}
	ended := c.eng.EndOwnedBy(s.owner)
	c.owners[s.owner] = nil
	c.free = append(c.free, s.owner)
	c.metrics.sessionsDropped.WithLabelValues(why).Inc()
	c.lg.Info("session dropped", "instance", s.rec.InstanceId, "service", s.rec.Service,
		"lease", int64(s.lease), "reason", why, "ended_txns", len(ended), "expired_for", time.Since(e.at))
}

// massExpiryLocked says whether the expiries of the window make a mass
// expiry: at least min of them, and at least ratio of the sessions (those
// live now and those expired in the window).
func (c *Coordinator) massExpiryLocked() bool {
	n := len(c.sp.recentAt)
	total := len(c.sessions) + n
	// The epsilon keeps 4 of 5 at 0.8 from failing on rounding.
	return n >= c.cfg.SelfPreservationMin && float64(n) >= c.cfg.SelfPreservationRatio*float64(total)-1e-9
}

// queueLocked queues an expired session's expiry: its transactions become
// legacy and stay until it registers again or its grace ends.
func (c *Coordinator) queueLocked(e *expiredSession) {
	e.queued = true
	e.until = e.at.Add(c.cfg.SelfPreservationGrace)
	c.sp.queued++
	c.keepPinsLocked(e.s.owner)
	c.spChangedLocked()
	n := c.eng.MakeLegacyOwnedBy(e.s.owner)
	c.lg.Info("session expiry queued: its transactions are kept as legacy", "instance", e.s.rec.InstanceId,
		"service", e.s.rec.Service, "lease", int64(e.s.lease), "legacy_txns", n, "until", e.until)
}

func (c *Coordinator) startSelfPreservationLocked(now time.Time) {
	sp := &c.sp
	sp.active, sp.since = true, now
	sp.activations++
	for _, e := range sp.expired {
		if !e.queued {
			c.queueLocked(e)
		}
	}
	// BF calls held for the switch would wait for the mode: they run on
	// the old version (decideLocked does so for new ones).
	for _, u := range c.active {
		c.releaseHeldLocked(u)
	}
	c.lg.Warn("self-preservation started: most sessions' leases expired together, likely a partition around the coordinator; "+
		"their expiry is queued, their transactions are kept and every switch is paused",
		"expired", len(sp.recentAt), "sessions", len(c.sessions)+len(sp.recentAt), "queued", sp.queued,
		"window", c.cfg.SelfPreservationWindow, "ratio", c.cfg.SelfPreservationRatio,
		"min", c.cfg.SelfPreservationMin, "grace", c.cfg.SelfPreservationGrace)
}

// endSelfPreservationLocked ends the mode. The window starts afresh: the
// expiries that started it must not start it again. The caller moves the
// updates on (progressLocked) when it can send what that decides.
func (c *Coordinator) endSelfPreservationLocked(why string) {
	sp := &c.sp
	c.lg.Warn("self-preservation ended", "reason", why, "lasted", time.Since(sp.since), "queued", sp.queued)
	sp.active, sp.since = false, time.Time{}
	sp.recent = nil
	clear(sp.recentAt)
	c.spChangedLocked()
}

// reclaimExpiredLocked gives a registering instance whose lease expired its
// transactions back (DESIGN.md §7: "a queued session that re-registers is
// removed from the queue"): the new session takes the expired one's owner
// slot; its transactions are legacy, since the coordinator may have missed
// what they did, and the roots the sidecar no longer runs ended while it was
// away. It returns nil if the instance has no expired session, or one of
// another service or version (whose transactions end). gone counts the
// ended roots. The instance's expiry no longer counts toward a mass expiry.
func (c *Coordinator) reclaimExpiredLocked(rec *pb.SessionRecord, ttl time.Duration, roots []*pb.LiveRoot) (s *session, gone int) {
	sp := &c.sp
	sp.init()
	id := rec.InstanceId
	delete(sp.recentAt, id)
	e := sp.expired[id]
	if e == nil {
		return nil, 0
	}
	if e.s.rec.Service != rec.Service || e.s.rec.Version != rec.Version {
		c.dropExpiredLocked(e, dropReplaced)
		c.endIfQueueEmptyLocked("every queued session registered again or was replaced")
		return nil, 0
	}
	delete(sp.expired, id)
	if e.queued {
		sp.queued--
		c.spChangedLocked()
	}
	s = &session{
		owner: e.s.owner,
		rec:   rec,
		svc:   c.eng.Service(rec.Service),
		ver:   c.eng.Version(rec.Version),
		lease: storage.LeaseID(rec.LeaseId),
		ttl:   ttl,
	}
	c.owners[s.owner] = s
	c.sessions[id] = s
	sp.noteTTL(ttl)
	gone = c.endGoneRootsLocked(s, roots)
	n := c.eng.MakeLegacyOwnedBy(s.owner)
	c.lg.Info("expired session registered again: its transactions are back, as legacy", "instance", id,
		"service", rec.Service, "queued", e.queued, "away", time.Since(e.at), "legacy_txns", n, "ended", gone)
	c.endIfQueueEmptyLocked("every queued session registered again")
	return s, gone
}

// endGoneRootsLocked ends the roots owned by s that the sidecar no longer
// reports (transactions adopted from downstream calls are not its roots).
func (c *Coordinator) endGoneRootsLocked(s *session, roots []*pb.LiveRoot) int {
	want := make(map[string]struct{}, len(roots))
	for _, r := range roots {
		want[r.TxnId] = struct{}{}
	}
	var gone []string
	c.eng.ForEachTxn(func(t graph.TxnInfo) bool {
		if t.Owner == s.owner && !t.Implicit {
			if _, ok := want[t.ID]; !ok {
				gone = append(gone, t.ID)
			}
		}
		return true
	})
	n := 0
	for _, id := range gone {
		if c.eng.End(id) == nil {
			n++
		}
	}
	return n
}

// endIfQueueEmptyLocked ends an active mode whose queue is empty.
func (c *Coordinator) endIfQueueEmptyLocked(why string) {
	if c.sp.active && c.sp.queued == 0 {
		c.endSelfPreservationLocked(why)
	}
}

// selfPreservationTickLocked drops the expired sessions whose wait is over;
// it reports whether it changed anything.
func (c *Coordinator) selfPreservationTickLocked(now time.Time) bool {
	sp := &c.sp
	sp.prune(now, c.cfg.SelfPreservationWindow)
	changed := false
	for _, e := range sp.expired {
		if now.Before(e.until) {
			continue
		}
		why := dropLeaseExpired
		if e.queued {
			why = dropGraceEnded
		}
		c.dropExpiredLocked(e, why)
		changed = true
	}
	if changed {
		c.endIfQueueEmptyLocked("the grace of every queued session ended")
	}
	return changed
}

// selfPreservationTickAllLocked ends the waits of expired sessions (every
// selfPreservationTick).
func (c *Coordinator) selfPreservationTickAllLocked(now time.Time) {
	if len(c.sp.expired) == 0 && len(c.sp.recent) == 0 {
		return
	}
	if c.selfPreservationTickLocked(now) {
		c.progressLocked() // an update may have waited for these transactions
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
func (c *Coordinator) selfPreservationLocked() *pb.SelfPreservation {
	sp := &c.sp
	sp.prune(time.Now(), c.cfg.SelfPreservationWindow)
	out := &pb.SelfPreservation{
		Active:         sp.active,
		Window:         durationpb.New(c.cfg.SelfPreservationWindow),
		Ratio:          c.cfg.SelfPreservationRatio,
		MinCount:       uint32(c.cfg.SelfPreservationMin),
		Grace:          durationpb.New(c.cfg.SelfPreservationGrace),
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
		c.dropExpiredLocked(e, dropOperatorEnded)
		n++
	}
	c.endSelfPreservationLocked(fmt.Sprintf("ended by an operator: %d queued sessions dropped", n))
	out := c.selfPreservationLocked()
	c.progressLocked()
	c.unlockAndSend()
	return out, nil
}

func (a admin) GetSelfPreservation(ctx context.Context, _ *pb.GetSelfPreservationRequest) (*pb.SelfPreservation, error) {
	c := a.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.selfPreservationLocked(), nil
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

func (c *Coordinator) selfPreservationReportLocked() SelfPreservationReport {
	r := SelfPreservationReport{Active: c.sp.active, Queued: []string{}}
	if c.sp.active {
		since := c.sp.since.UTC()
		r.Since = &since
	}
	for id, e := range c.sp.expired {
		if e.queued {
			r.Queued = append(r.Queued, id)
		}
	}
	slices.Sort(r.Queued)
	return r
}
