package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// Deregistration (issue 13, item 2). A sidecar that shuts down cleanly
// sends Deregister after its last events: its session ends at once instead
// of lingering until its lease expires. A clean shutdown is not a loss:
// it never enters self-preservation's count of recent expiries (item 6),
// so a rolling redeploy cannot start the mode.
//
// Its root transactions (and those it adopted, whose Begin has not come):
//   - one whose every running sub-transaction is on this session's service,
//     and that is not legacy, runs nowhere but in the process that is going
//     away: it ends at once;
//   - any other still has sub-transactions running on other services (or,
//     legacy, may have: the coordinator did not see all it did). Ending it
//     would make the services it still uses look free while it runs there;
//     keeping it until its session's End would block them forever, since
//     the RETURNs of its calls would have come from the sidecar that left.
//     It is kept, blocking what it blocks, for the implicit timeout
//     (Config.ImplicitTimeout: the bound the coordinator already gives a
//     transaction known only from downstream), then ends. Its events from
//     other sidecars apply meanwhile; a Begin of an adopted one gives it
//     its real owner.
//
// The session's record is deleted (a fenced write, as every leader write)
// and its lease revoked, which deletes its transaction records: a kept
// transaction is not restored by a later leader (no sidecar reports it as
// a live root any more).

// dropDeregistered is the sessions_dropped_total reason of a clean shutdown.
const dropDeregistered = "deregistered"

// departed is a deregistered session whose owner slot is kept, with the
// transactions still running elsewhere that it owns, until until.
type departed struct {
	s     *session
	until time.Time
}

// deregister ends session s of stream st at the sidecar's request.
func (c *Coordinator) deregister(ctx context.Context, s *session, st *stream, reason string) (*pb.Deregistered, error) {
	id := s.rec.InstanceId
	defer c.regLocks.lock("instance/" + id)()
	c.mu.Lock()
	if c.sess.get(id) != s || s.stream != st {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: deregister: the session was taken over by another stream or expired", ErrNotRegistered)
	}
	now := time.Now()
	c.sess.resynced(id)
	c.sess.attach(s, nil) // st answers, then ends by itself
	s.expired = true      // no lease any more: nothing is written for what it owns
	c.unlistSessionLocked(s)
	ended, kept := c.settleDepartingLocked(s)
	if kept == 0 {
		c.sess.freeOwner(s.owner)
	} else {
		c.sess.depart(s.owner, &departed{s: s, until: now.Add(c.cfg.ImplicitTimeout)})
	}
	c.metrics.sessionsDropped.WithLabelValues(dropDeregistered).Inc()
	c.lg.Info("session deregistered", "instance", id, "service", s.rec.Service, "version", s.rec.Version,
		"lease", int64(s.lease), "reason", reason, "ended_txns", ended, "kept_txns", kept,
		"kept_until", now.Add(c.cfg.ImplicitTimeout))
	c.orch.progressLocked() // an update may have waited for this session's ack
	c.unlockAndSend()

	// Its record goes now; the revoke takes its transaction records along.
	// The session watch then finds no session under the key: no expiry.
	if err := c.commit(ctx, storage.DeleteSession(id)); err != nil {
		if errors.Is(err, ErrFenced) {
			return nil, err
		}
		// Gone from memory already; the lease expires by itself, and its
		// expiry is not counted either (no session has it any more).
		c.lg.Warn("deregister: delete session record", "instance", id, "error", err)
	}
	if err := c.leases.Revoke(ctx, s.lease); err != nil {
		c.lg.Warn("deregister: revoke session lease", "instance", id, "lease", int64(s.lease), "error", err)
	}
	return &pb.Deregistered{Ended: uint32(ended), Kept: uint32(kept)}, nil
}

// settleDepartingLocked ends the transactions owned by s that run nowhere
// but on its own service and counts the others, which it keeps.
func (c *Coordinator) settleDepartingLocked(s *session) (ended, kept int) {
	var end []string
	c.eng.ForEachTxn(func(t graph.TxnInfo) bool {
		if t.Owner != s.owner {
			return true
		}
		local := !t.Legacy
		for _, sub := range t.Running {
			if sub.Service != s.svc {
				local = false
				break
			}
		}
		if local {
			end = append(end, t.ID)
		} else {
			kept++
		}
		return true
	})
	for _, id := range end {
		if c.eng.End(id) == nil {
			ended++
		}
	}
	return ended, kept
}

// sweepDepartedLocked ends what deregistered sessions kept once their time
// is over, and frees their owner slots.
func (c *Coordinator) sweepDepartedLocked(now time.Time) {
	for o, d := range c.sess.departures() {
		if now.Before(d.until) {
			continue
		}
		c.sess.endDeparture(o)
		ended := c.eng.EndOwnedBy(o)
		if len(ended) > 0 {
			c.lg.Info("ended the transactions a deregistered session kept", "instance", d.s.rec.InstanceId,
				"service", d.s.rec.Service, "ended_txns", len(ended))
			c.orch.progressLocked()
		}
	}
}
