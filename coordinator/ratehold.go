package coordinator

import (
	"fmt"
	"time"
)

// A session over its event rate (quota.go) is made cheap the way servers
// make a flood cheap: once a batch of it was refused for the rate, its
// stream's handler stops reading the stream until the session's token
// bucket has refilled (at most ratePauseMax, and a quarter of its lease's
// TTL, at a time). What the sidecar sends meanwhile stays in HTTP/2 flow
// control, undecoded (its Send blocks once the stream's window is full),
// instead of being decoded, refused and acknowledged event by event: the
// session gets its rate and little more of the coordinator's CPU. Its acks,
// call decisions and routing are still sent during the pause; other streams
// are not affected.
//
// A session that stays over its rate for OverRateCloseAfter (refused again
// within overRateGap of its previous refusal, all that time) has its stream
// closed with ResourceExhausted; it may reconnect (reconnections are bounded
// by the streams per peer), but a resumed session keeps its bucket and its
// run, so one that goes on flooding is closed again at its next refusal.

// A pause must not cost the session its lease: its heartbeats share the
// stream, and one sent while the stream is not read waits behind the
// batches queued before it, each of which may bring another pause (a
// session in debt on its rejected-events budget is read about a batch a
// pause). So the stream is paused only while its session's last heartbeat
// is recent: when the last one answered, plus the pause, is more than half
// the session's TTL ago, the stream is read on (refusing what it must)
// until the next heartbeat is reached.

// maxRatePause bounds one pause of a stream: heartbeats share the stream,
// and a session's lease must not lapse while it waits (a pause is also at
// most a quarter of the session's TTL).
const maxRatePause = time.Second

// DefaultOverRateCloseAfter is how long a session may stay over its event
// rate before its stream is closed.
const DefaultOverRateCloseAfter = 30 * time.Second

// quotaRateClose keys the closures' log line in sessionQuota.logged.
const quotaRateClose = "session_event_rate_close"

// rateHold is what a stream's handler does after a batch was refused for
// the rate: stop reading for pause, or end the stream with closeErr.
type rateHold struct {
	pause    time.Duration
	closeErr error
}

// overRateGap is how soon after its previous refusal for the rate a
// session's next one must come for the run to go on: a session throttled
// by pauses is refused about once a pause.
func (ad *admission) overRateGap() time.Duration { return 2 * ad.cfg.ratePauseMax }

// overRateLocked notes that s had events refused for its rate at now and
// says how long its stream should not be read (until its bucket is full,
// at most ratePauseMax or a quarter of its TTL), or, when s has been over
// its rate for OverRateCloseAfter, that the stream must be closed. Event
// lock held.
func (ad *admission) overRateLocked(s *session, now time.Time) rateHold {
	q := &s.quota
	if q.overSince.IsZero() || now.Sub(q.lastOver) > ad.overRateGap() {
		q.overSince = now
	}
	q.lastOver = now
	if over := now.Sub(q.overSince); over >= ad.cfg.OverRateCloseAfter {
		if last, ok := q.logged[quotaRateClose]; !ok || now.Sub(last) >= quotaLogEvery {
			if q.logged == nil {
				q.logged = make(map[string]time.Time)
			}
			q.logged[quotaRateClose] = now
			ad.lg.Warn("stream closed: session over its event rate", "instance", s.rec.InstanceId,
				"over_for", over, "next_log_in", quotaLogEvery)
		}
		return rateHold{closeErr: fmt.Errorf("%w: session %q has sent more than %.0f events per second (burst %d) for %v: stream closed; send slower, then reconnect (--max-events-per-second, --over-rate-close-after %v)",
			ErrQuota, s.rec.InstanceId, ad.cfg.MaxEventsPerSecond, ad.cfg.EventBurst, over.Round(time.Second), ad.cfg.OverRateCloseAfter)}
	}
	// Heartbeats wait too: a pause is a small part of the session's lease.
	most := min(ad.cfg.ratePauseMax, s.ttl/4)
	missing := float64(ad.cfg.EventBurst) - q.events.TokensAt(now)
	refill := max(missing, 0) / ad.cfg.MaxEventsPerSecond // seconds
	if refill >= most.Seconds() {
		return rateHold{pause: most}
	}
	return rateHold{pause: time.Duration(refill * float64(time.Second))}
}

// mayPause reports whether the stream may stop being read for pause
// without starving its session's heartbeats: its last heartbeat was
// answered (or it registered) recently enough that one queued now is read
// within half the session's TTL. The handler's alone.
func (st *stream) mayPause(pause time.Duration) bool {
	if pause <= 0 || st.ttl <= 0 {
		return false
	}
	since := time.Since(time.Unix(0, st.beatAt.Load()))
	return since+pause <= st.ttl/2
}
