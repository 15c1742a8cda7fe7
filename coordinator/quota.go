package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/peer"

	"github.com/coordinator/coordinator/security/identity"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Quotas (issue 13): what one session may make the coordinator hold or do.
// An event past a quota is refused with ErrQuota (gRPC ResourceExhausted)
// in its Ack, changes nothing, and is counted in
// coordinator_quota_refusals_total{quota=...}; other sessions are not
// affected. The defaults leave room for the heaviest legitimate sidecar we
// measure (bench/ingest: about 65k events/s and 25k live transactions per
// stream) and stop a hostile one long before it costs much memory.
const (
	// DefaultMaxLiveTxnsPerSession: live transactions a session owns (its
	// BEGINs, and the transactions its CALLs start before their BEGIN).
	// About 100 MB at the ~1 KB a live transaction costs.
	DefaultMaxLiveTxnsPerSession = 100_000
	// DefaultMaxNewServicesPerSession: services a session may introduce by
	// calling names nobody registered or declared.
	DefaultMaxNewServicesPerSession = 1000
	// DefaultMaxNewVersionsPerSession: versions a session may introduce by
	// naming them in its CALLs.
	DefaultMaxNewVersionsPerSession = 100
	// DefaultMaxLearnedEdgesPerSession and DefaultMaxLearnedEdges: static
	// edges learned from undeclared calls, from one session and in all.
	DefaultMaxLearnedEdgesPerSession = 1000
	DefaultMaxLearnedEdges           = 10_000
	// DefaultEventsPerSecond and DefaultEventBurst: each session's token
	// bucket. Three times bench/ingest's per-stream rate; the burst holds
	// several full batches (MaxEventsPerBatch).
	DefaultEventsPerSecond = 200_000
	DefaultEventBurst      = 4 * MaxEventsPerBatch
	// DefaultMaxSessions and DefaultMaxSessionsPerPeer: sessions known at
	// once (connected, or disconnected and waiting for their lease to
	// expire), in all and from one peer (its workload identity, or its
	// address without one). A sidecar that registers, drops its stream and
	// registers under another instance id leaves a session behind each
	// time for as long as its lease (up to MaxHeartbeat × (MaxAllowedMisses
	// + 1)); these bound what that can pile up. Twice the streams a replica
	// takes (server.DefaultMaxStreams, DefaultMaxStreamsPerPeer), so that
	// every stream can reconnect under a new id while its old session
	// lingers.
	DefaultMaxSessions        = 40_000
	DefaultMaxSessionsPerPeer = 10_000
)

// admission is the per-session quotas' policy: how many events a session
// may have applied now (its token bucket), whether it is in debt on its
// budget of rejected events (rejectbudget.go), how long its stream is not
// read while over either, and when it is closed (ratehold.go); it counts
// and logs each refusal. It keeps no state of its own: the usage it reads
// and changes is each session's (session.quota), under the event lock.
type admission struct {
	cfg     *Config
	lg      *slog.Logger
	metrics *metrics
}

// quota names one quota: its metric label and the coordinatord flag that
// sets it.
type quota struct{ label, flag string }

var (
	quotaLiveTxns          = quota{"live_txns", "--max-live-txns"}
	quotaSessionLiveTxns   = quota{"session_live_txns", "--max-live-txns-per-session"}
	quotaServices          = quota{"session_services", "--max-new-services-per-session"}
	quotaVersions          = quota{"session_versions", "--max-new-versions-per-session"}
	quotaEventRate         = quota{"session_event_rate", "--max-events-per-second"}
	quotaSessionLearned    = quota{"session_learned_edges", "--max-learned-edges-per-session"}
	quotaLearnedEdgesTotal = quota{"learned_edges", "--max-learned-edges"}
	quotaSessions          = quota{"sessions", "--max-sessions"}
	quotaPeerSessions      = quota{"peer_sessions", "--max-sessions-per-peer"}

	quotas = []quota{quotaLiveTxns, quotaSessionLiveTxns, quotaServices, quotaVersions,
		quotaEventRate, quotaRejected, quotaSessionLearned, quotaLearnedEdgesTotal, quotaSessions, quotaPeerSessions}
)

// quotaLogEvery rate-limits the refusal log: one line per session and quota
// at most this often (a client causes them).
const quotaLogEvery = 10 * time.Second

// sessionQuota is a session's use of its quotas; guarded by Coordinator.mu.
type sessionQuota struct {
	services, versions, learned int
	events                      *rate.Limiter
	rejected                    debtBucket // rejectbudget.go
	// overSince and lastOver: the run of event-rate refusals the session
	// is in (ratehold.go).
	overSince, lastOver time.Time
	logged              map[string]time.Time // last refusal logged, by quota
}

func (c *Config) setQuotaDefaults() {
	if c.MaxLiveTxnsPerSession <= 0 {
		c.MaxLiveTxnsPerSession = DefaultMaxLiveTxnsPerSession
	}
	if c.MaxNewServicesPerSession <= 0 {
		c.MaxNewServicesPerSession = DefaultMaxNewServicesPerSession
	}
	if c.MaxNewVersionsPerSession <= 0 {
		c.MaxNewVersionsPerSession = DefaultMaxNewVersionsPerSession
	}
	if c.MaxLearnedEdgesPerSession <= 0 {
		c.MaxLearnedEdgesPerSession = DefaultMaxLearnedEdgesPerSession
	}
	if c.MaxLearnedEdges <= 0 {
		c.MaxLearnedEdges = DefaultMaxLearnedEdges
	}
	if c.MaxEventsPerSecond <= 0 {
		c.MaxEventsPerSecond = DefaultEventsPerSecond
	}
	if c.EventBurst <= 0 {
		c.EventBurst = DefaultEventBurst
	}
	if c.MaxRejectedPerSecond <= 0 {
		c.MaxRejectedPerSecond = DefaultRejectedPerSecond
	}
	if c.RejectedBurst <= 0 {
		c.RejectedBurst = DefaultRejectedBurst
	}
	if c.OverRateCloseAfter <= 0 {
		c.OverRateCloseAfter = DefaultOverRateCloseAfter
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = DefaultMaxSessions
	}
	if c.MaxSessionsPerPeer <= 0 {
		c.MaxSessionsPerPeer = DefaultMaxSessionsPerPeer
	}
	if c.ratePauseMax <= 0 {
		c.ratePauseMax = maxRatePause
	}
}

// quotaExceeded is the refusal of an event past q: it names what was
// exceeded (format and args) and the limit.
func quotaExceeded(q quota, limit int, format string, args ...any) error {
	return &quotaError{q: q, limit: limit, format: format, args: args}
}

// quotaError is a refusal past a quota. Its message is formatted when it is
// read, after the event lock is released (applyBatch builds the Ack's
// errors then), or for the rate-limited log line: a run of refused events
// costs the event lock little each.
type quotaError struct {
	q      quota
	limit  int
	format string
	args   []any
}

func (e *quotaError) Error() string {
	return fmt.Sprintf("%v: %s: the limit is %d (%s)", ErrQuota, fmt.Sprintf(e.format, e.args...), e.limit, e.q.flag)
}

func (e *quotaError) Unwrap() error { return ErrQuota }

// refuseLocked counts and (rate-limited) logs a refusal, and returns err.
func (ad *admission) refuseLocked(s *session, q quota, err error, n int) error {
	ad.metrics.quotaRefusals[q.label].Add(float64(n))
	now := time.Now()
	if s != nil {
		if s.quota.logged == nil {
			s.quota.logged = make(map[string]time.Time)
		}
		if last, ok := s.quota.logged[q.label]; ok && now.Sub(last) < quotaLogEvery {
			return err
		}
		s.quota.logged[q.label] = now
		ad.lg.Warn("event refused: quota exceeded", "instance", s.rec.InstanceId, "quota", q.label,
			"refused", n, "error", err.Error(), "next_log_in", quotaLogEvery)
	}
	return err
}

// admitEventsLocked takes tokens for n events from s's bucket and returns
// how many may be applied; the rest are refused.
func (ad *admission) admitEventsLocked(s *session, n int, now time.Time) int {
	if s == nil || n == 0 {
		return n
	}
	if s.quota.events == nil {
		s.quota.events = rate.NewLimiter(rate.Limit(ad.cfg.MaxEventsPerSecond), ad.cfg.EventBurst)
	}
	k := min(n, int(s.quota.events.TokensAt(now)))
	if k > 0 && !s.quota.events.AllowN(now, k) {
		k = 0
	}
	return k
}

// eventRateExceeded is the refusal of the events over s's rate.
func (ad *admission) eventRateExceeded() error {
	return quotaExceeded(quotaEventRate, int(ad.cfg.MaxEventsPerSecond),
		"more than %.0f events per second from this session (burst %d)", ad.cfg.MaxEventsPerSecond, ad.cfg.EventBurst)
}

// checkNewTxnLocked refuses an event that would start a live transaction
// (a BEGIN, or a CALL of a transaction not live) past the live quotas.
func (c *Coordinator) checkNewTxnLocked(s *session, txn string) error {
	if c.eng.Has(txn) {
		return nil
	}
	if n := c.eng.Live(); n >= c.cfg.MaxLiveTxns {
		return c.adm.refuseLocked(s, quotaLiveTxns, quotaExceeded(quotaLiveTxns, c.cfg.MaxLiveTxns,
			"%d live transactions in all", n), 1)
	}
	if n := c.eng.Owned(s.owner); n >= c.cfg.MaxLiveTxnsPerSession {
		return c.adm.refuseLocked(s, quotaSessionLiveTxns, quotaExceeded(quotaSessionLiveTxns, c.cfg.MaxLiveTxnsPerSession,
			"session %q owns %d live transactions", s.rec.InstanceId, n), 1)
	}
	return nil
}

// callCharge is what a CALL that passed checkCallLocked will add.
type callCharge struct{ service, version bool }

// checkCallLocked refuses a CALL that would introduce a service, a version
// or a learned edge past s's quotas, or start a transaction past the live
// quotas. It changes nothing.
func (c *Coordinator) checkCallLocked(s *session, ev *pb.Event) (callCharge, error) {
	var ch callCharge
	to, known := c.eng.LookupService(ev.Service)
	if !known {
		if s.quota.services >= c.cfg.MaxNewServicesPerSession {
			return ch, c.adm.refuseLocked(s, quotaServices, quotaExceeded(quotaServices, c.cfg.MaxNewServicesPerSession,
				"session %q introduced %d services; CALL names another, %q", s.rec.InstanceId, s.quota.services, ev.Service), 1)
		}
		ch.service = true
	}
	if ev.Version != "" && (!ev.Wait || ev.Lane != "") {
		if _, ok := c.eng.LookupVersion(ev.Version); !ok {
			if s.quota.versions >= c.cfg.MaxNewVersionsPerSession {
				return ch, c.adm.refuseLocked(s, quotaVersions, quotaExceeded(quotaVersions, c.cfg.MaxNewVersionsPerSession,
					"session %q introduced %d versions; CALL names another, %q", s.rec.InstanceId, s.quota.versions, ev.Version), 1)
			}
			ch.version = true
		}
	}
	if !known || !c.eng.HasEdge(s.svc, to) {
		if s.quota.learned >= c.cfg.MaxLearnedEdgesPerSession {
			return ch, c.adm.refuseLocked(s, quotaSessionLearned, quotaExceeded(quotaSessionLearned, c.cfg.MaxLearnedEdgesPerSession,
				"session %q taught %d undeclared edges; CALL %s→%s is another", s.rec.InstanceId, s.quota.learned, s.rec.Service, ev.Service), 1)
		}
		if n := c.cat.learnedEdges(); n >= c.cfg.MaxLearnedEdges {
			return ch, c.adm.refuseLocked(s, quotaLearnedEdgesTotal, quotaExceeded(quotaLearnedEdgesTotal, c.cfg.MaxLearnedEdges,
				"%d undeclared edges learned in all; CALL %s→%s is another", n, s.rec.Service, ev.Service), 1)
		}
	}
	return ch, c.checkNewTxnLocked(s, ev.TxnId)
}

// chargeCallLocked charges s with what its CALL added: a service or version
// now interned. Learned edges are charged where they are learned
// (callLocked), a held call's when it is released.
func (c *Coordinator) chargeCallLocked(s *session, ev *pb.Event, ch callCharge) {
	if ch.service {
		if _, ok := c.eng.LookupService(ev.Service); ok {
			s.quota.services++
		}
	}
	if ch.version {
		if _, ok := c.eng.LookupVersion(ev.Version); ok {
			s.quota.versions++
		}
	}
}

// quotaLabels lists every quota's metric label.
func quotaLabels() []string {
	out := make([]string, len(quotas))
	for i, q := range quotas {
		out[i] = q.label
	}
	return out
}

// admitSessionLocked says whether a registration from peer may hold a
// session: old is the instance's live session (nil for a new instance).
// Resuming or replacing an instance's session keeps the count; a new
// instance, or one that moves to another peer, must fit under
// MaxSessions and MaxSessionsPerPeer. The counts are read before the
// registration's etcd work, so registrations running at once may pass
// the limits by as many (at most the streams open). Event lock held.
func (c *Coordinator) admitSessionLocked(instance string, old *session, peer string) error {
	if old == nil {
		if n := c.sess.len(); n >= c.cfg.MaxSessions {
			c.metrics.quotaRefusals[quotaSessions.label].Inc()
			c.lg.Warn("registration refused: too many sessions", "instance", instance, "sessions", n, "limit", c.cfg.MaxSessions)
			return quotaExceeded(quotaSessions, c.cfg.MaxSessions,
				"register %q: %d sessions are connected or waiting for their lease to expire", instance, n)
		}
	}
	if peer == "" || (old != nil && old.peer == peer) {
		return nil
	}
	if n := c.sess.peerSessions(peer); n >= c.cfg.MaxSessionsPerPeer {
		c.metrics.quotaRefusals[quotaPeerSessions.label].Inc()
		c.lg.Warn("registration refused: too many sessions from one peer", "instance", instance, "peer", peer, "sessions", n, "limit", c.cfg.MaxSessionsPerPeer)
		return quotaExceeded(quotaPeerSessions, c.cfg.MaxSessionsPerPeer,
			"register %q: %s holds %d sessions (connected or waiting for their lease to expire)", instance, peer, n)
	}
	return nil
}

// peerOf is what the per-peer session quota counts a registration under:
// its workload identity when it has one, else its address without the
// port.
func peerOf(ctx context.Context) string {
	if who, ok := identity.FromContext(ctx); ok && who.Name != "" {
		return "identity " + who.Name
	}
	if host, ok := PeerHost(ctx); ok {
		return "address " + host
	}
	return ""
}

// PeerHost is the address a stream (or call) comes from, without its
// port; ok is false when the context has no peer. The per-peer limits on
// streams (coordinator/server) and sessions count by it.
func PeerHost(ctx context.Context) (host string, ok bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "", false
	}
	if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
		return host, true
	}
	return p.Addr.String(), true
}
