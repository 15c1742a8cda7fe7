package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// Self-preservation across failovers (DESIGN.md §6, §7). The expired
// sessions' keys and transaction records go with their leases, so what
// self-preservation keeps exists in the leader's memory only. The mode is
// therefore stored in one key (storage.Keys.SelfPreservation) while it is
// active: its start, the queued sessions and when each expired. A new
// leader, or the replica restarted, resumes the mode from it (restore): it
// does not know the queued sessions' transactions, but it holds every
// switch until each queued session has registered again, when its live
// roots come back as legacy (resyncLocked), or its grace has ended.
//
// The first-use pins of the queued sessions' transactions went with the
// leases too. A new leader adds a transaction that comes back as legacy
// and, for a pinning update that switched, routes it by its pin, or to the
// old version if it has none (legacyUsesLocked): so when a session's
// expiry is queued, the pins its transactions need (what they used at
// every service mid-update) are written again, without a lease. They are
// deleted with the other pins of their service when its update finishes.
//
// Writes are asynchronous, as the write-behind's are: a change under
// Coordinator.mu bumps a generation and kicks one writer, which reads the
// newest state under the lock and commits it (fenced) outside, so no
// event waits for etcd; a crash loses at most the last changes, as it
// loses the write-behind's records. Stop writes the last state.

// spStoreRetry bounds the pause between failed writes of the record.
const spStoreRetry = time.Second

// spStore is the writer's state; mu serializes the writes.
type spStore struct {
	kick    chan struct{}
	mu      sync.Mutex
	written uint64       // selfPreservation.gen of what etcd holds
	pins    []storage.Op // pins taken from selfPreservation.pins, not yet committed
}

// spChangedLocked notes that the stored record must change.
func (sp *selfPreservation) spChangedLocked() {
	sp.gen++
	sp.kickSPStore()
}

func (sp *selfPreservation) kickSPStore() {
	select {
	case sp.store.kick <- struct{}{}:
	default:
	}
}

// keepPinsLocked queues, for writing without a lease, the pins of the
// transactions owned by owner at the services of the pinning updates in
// progress: what each used there.
func (sp *selfPreservation) keepPinsLocked(owner graph.Owner) {
	var ups []*update
	for u := range sp.orch.upd.actives() {
		if u.strat.Pins() && !u.pending {
			ups = append(ups, u)
		}
	}
	if len(ups) == 0 {
		return
	}
	sp.eng.ForEachOwnedBy(owner, func(txn string, used []graph.Use) {
		for _, u := range ups {
			for _, use := range used {
				if m := u.member(use.Service); m != nil {
					sp.pins = append(sp.pins,
						storage.PutPin(m.name, txn, sp.eng.VersionName(use.Version), storage.NoLease))
				}
			}
		}
	})
}

// selfPreservationRecordLocked is what the key must hold: nil when the
// mode is not active (the key must not exist).
func (sp *selfPreservation) selfPreservationRecordLocked() *pb.SelfPreservationRecord {
	if !sp.active {
		return nil
	}
	rec := &pb.SelfPreservationRecord{
		Since:    timestamppb.New(sp.since),
		Window:   durationpb.New(sp.cfg.SelfPreservationWindow),
		Ratio:    sp.cfg.SelfPreservationRatio,
		MinCount: uint32(sp.cfg.SelfPreservationMin),
		Grace:    durationpb.New(sp.cfg.SelfPreservationGrace),
	}
	for id, e := range sp.expired {
		if e.queued {
			rec.Queued = append(rec.Queued, &pb.QueuedSession{
				InstanceId: id,
				Service:    e.s.rec.Service,
				Version:    e.s.rec.Version,
				ExpiredAt:  timestamppb.New(e.at),
			})
		}
	}
	slices.SortFunc(rec.Queued, func(a, b *pb.QueuedSession) int { return strings.Compare(a.InstanceId, b.InstanceId) })
	return rec
}

// flushSelfPreservation writes the pins kept so far and the record (or
// deletes it) if the mode changed since it was last written.
func (sp *selfPreservation) flushSelfPreservation(ctx context.Context) error {
	w := &sp.store
	w.mu.Lock()
	defer w.mu.Unlock()
	sp.side.lock()
	gen := sp.gen
	w.pins = append(w.pins, sp.pins...)
	sp.pins = nil
	var rec *pb.SelfPreservationRecord
	if gen != w.written {
		rec = sp.selfPreservationRecordLocked()
	}
	sp.side.unlock()

	var ops []storage.Op
	if gen != w.written {
		if rec == nil {
			ops = append(ops, storage.DeleteSelfPreservation())
		} else {
			op := storage.PutSelfPreservation(rec)
			if err := op.Err(); err != nil {
				return fmt.Errorf("encode self-preservation record: %w", err)
			}
			ops = append(ops, op)
		}
	}
	// The record and the first pins in one transaction; the rest follow.
	for first := true; first || len(w.pins) > 0; first = false {
		n := min(len(w.pins), storage.DefaultMaxOps-len(ops))
		batch := append(ops, w.pins[:n]...)
		if len(batch) == 0 {
			break
		}
		if err := sp.side.commit(ctx, batch...); err != nil {
			return err
		}
		w.pins = w.pins[n:]
		if len(ops) > 0 {
			ops = nil
			w.written = gen
			sp.lg.Debug("self-preservation stored", "active", rec != nil, "queued", len(rec.GetQueued()))
		}
	}
	if len(w.pins) == 0 {
		w.pins = nil
	}
	return nil
}

// runSelfPreservationStore writes the record when the mode changes.
func (c *Coordinator) runSelfPreservationStore() {
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.sp.store.kick:
		}
		for backoff := 10 * time.Millisecond; ; backoff = min(2*backoff, spStoreRetry) {
			ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
			err := c.sp.flushSelfPreservation(ctx)
			cancel()
			if err == nil {
				break
			}
			if errors.Is(err, ErrFenced) || c.ctx.Err() != nil {
				return // another replica leads, or stopping (Stop writes the last state)
			}
			c.lg.Warn("store self-preservation, retrying", "backoff", backoff, "error", err)
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}
}

// restoreSelfPreservationLocked resumes the mode a previous leader stored: its
// queued sessions are queued again, as placeholders that own no
// transaction, until they register again or their grace ends. A queued
// session that has a session in etcd registered again before the record
// caught up: the resync holds switches until it re-registers once more.
//
// The grace counts from the recorded expiry, as it did at the previous
// leader (so failovers do not extend it), but a resumed session gets at
// least MinSessionTTL from now, the time a live sidecar gets to find the
// new leader (Start), since it could not register while none led.
func (sp *selfPreservation) restoreSelfPreservationLocked(rec *pb.SelfPreservationRecord) {
	sp.init()
	now := time.Now()
	back := 0
	for _, q := range rec.Queued {
		id := q.InstanceId
		if id == "" || sp.expired[id] != nil {
			continue
		}
		if sp.sess.get(id) != nil {
			back++
			continue
		}
		s := &session{
			rec:     &pb.SessionRecord{InstanceId: id, Service: q.Service, Version: q.Version},
			svc:     sp.eng.Service(q.Service),
			ver:     sp.eng.Version(q.Version),
			expired: true,
		}
		sp.sess.addExpired(s)
		e := &expiredSession{s: s, at: q.ExpiredAt.AsTime(), queued: true, restored: true}
		if q.ExpiredAt == nil {
			e.at = now
		}
		e.until = e.at.Add(sp.cfg.SelfPreservationGrace)
		if floor := now.Add(sp.cfg.MinSessionTTL); e.until.Before(floor) {
			e.until = floor
		}
		sp.expired[id] = e
		sp.queued++
	}
	// Whatever it resumes, the first write makes the key say so.
	sp.gen++
	if sp.queued == 0 {
		sp.lg.Info("stored self-preservation not resumed: every queued session has a session again", "registered_again", back)
		return
	}
	sp.active, sp.since = true, now
	if rec.Since != nil {
		sp.since = rec.Since.AsTime()
	}
	sp.activations++
	if rec.GetGrace().AsDuration() != sp.cfg.SelfPreservationGrace {
		sp.lg.Warn("resumed self-preservation was stored with another grace; this replica's applies",
			"stored", rec.GetGrace().AsDuration(), "grace", sp.cfg.SelfPreservationGrace)
	}
	sp.lg.Warn("self-preservation resumed from etcd: the transactions of the queued sessions are unknown here, "+
		"every switch is paused until they register again or their grace ends",
		"since", sp.since, "queued", sp.queued, "registered_again", back, "grace", sp.cfg.SelfPreservationGrace)
	return
}
