package coordinator

import (
	"errors"
	"time"
)

// The rejected-events budget (issue 13): a session whose events the engine
// keeps rejecting (ENDs and RETURNs of transactions it does not hold, calls
// out of order, events that name nothing) is broken or hostile, and each
// such event still costs the event lock and its Ack. Within its event rate
// a session could make the coordinator apply tens of thousands of them a
// second. So each session also has a budget of rejected events: a token
// bucket (MaxRejectedPerSecond, RejectedBurst) that every rejected event
// draws on, and that may go into debt (at most one burst deep).
//
// While a session is in debt, its stream is not read (as a session over
// its rate is not, ratehold.go) until the debt is repaid (at most
// ratePauseMax and a quarter of its TTL at a time), and a batch read while
// still in debt is refused whole, unapplied, with ErrQuota naming the
// budget. What the session sends meanwhile waits in HTTP/2 flow control. A
// sidecar that behaves sees none of it: events that arrive late (moot),
// calls to hosts outside the mesh, and events refused by another quota
// (that quota bounds them) are not rejections here.

// Defaults of the budget: a thousand rejections a second from one session
// is already a broken sidecar; the burst absorbs what a reconnect or a
// failover's resync can bring at once.
const (
	DefaultRejectedPerSecond = 1000
	DefaultRejectedBurst     = 10_000
)

var quotaRejected = quota{"session_rejected_events", "--max-rejected-events-per-second"}

// debtBucket is a token bucket that may go into debt, at most one burst.
type debtBucket struct {
	tokens float64
	at     time.Time
}

// level is the bucket's tokens at now (negative: in debt), refilled at r a
// second up to burst.
func (b *debtBucket) level(now time.Time, r float64, burst int) float64 {
	if b.at.IsZero() {
		b.tokens, b.at = float64(burst), now
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(float64(burst), b.tokens+d.Seconds()*r)
		b.at = now
	}
	return b.tokens
}

// take draws n tokens at now, into debt if need be (at most burst deep).
func (b *debtBucket) take(now time.Time, n int, r float64, burst int) float64 {
	b.tokens = max(b.level(now, r, burst)-float64(n), -float64(burst))
	return b.tokens
}

// rejectedDebtLocked reports whether s is in debt on its rejected-events
// budget at now; if so its batch is refused whole. Event lock held.
func (ad *admission) rejectedDebtLocked(s *session, now time.Time) bool {
	return s != nil && s.quota.rejected.level(now, ad.cfg.MaxRejectedPerSecond, ad.cfg.RejectedBurst) < 0
}

// chargeRejectedLocked draws n rejected events from s's budget and says how
// long its stream should not be read: until the debt is repaid, at most
// ratePauseMax and a quarter of its TTL; zero when it is not in debt.
// Event lock held.
func (ad *admission) chargeRejectedLocked(s *session, n int, now time.Time) time.Duration {
	if s == nil {
		return 0
	}
	left := s.quota.rejected.level(now, ad.cfg.MaxRejectedPerSecond, ad.cfg.RejectedBurst)
	if n > 0 {
		left = s.quota.rejected.take(now, n, ad.cfg.MaxRejectedPerSecond, ad.cfg.RejectedBurst)
	}
	if left >= 0 {
		return 0
	}
	repaid := time.Duration(-left / ad.cfg.MaxRejectedPerSecond * float64(time.Second))
	return min(repaid, ad.cfg.ratePauseMax, s.ttl/4)
}

// rejectedExceeded is the refusal of a batch sent while its session is in
// debt on its rejected-events budget.
func (ad *admission) rejectedExceeded() error {
	return quotaExceeded(quotaRejected, int(ad.cfg.MaxRejectedPerSecond),
		"more than %.0f rejected events per second from this session (burst %d): its events are refused until the budget refills; fix what makes the coordinator reject them (see the Acks' errors)",
		ad.cfg.MaxRejectedPerSecond, ad.cfg.RejectedBurst)
}

// countsAsRejected reports whether an event's error draws on the budget:
// not a refusal by another quota.
func countsAsRejected(err error) bool { return !errors.Is(err, ErrQuota) }
