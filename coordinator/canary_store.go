package coordinator

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
	"github.com/coordinator/coordinator/strategy"
)

// A canary's analysis windows across failovers (DESIGN.md §4.7). The
// outcomes of the calls are counted on the event path, in memory
// (observeOutcomeLocked); a canary whose windows changed is marked dirty
// and one writer stores the windows of the dirty canaries behind, each in
// its own key (storage.PutAnalysis: the non-empty slots of both versions'
// windows, bounded as the windows are), at most once per
// analysisFlushEvery, fenced, never holding the event lock across etcd. A
// new leader (restore) adds what it reads to the windows of the canaries
// it resumes in a canary step, so the analysis continues over the window
// where the last leader left it; a failover loses at most the outcomes of
// the last flush period. The writer deletes the record of a canary that
// left its canary steps (switched, aborted, finished) and the records
// restore found of updates that are not in one.
//
// Owned here: the writer's kick and the ids whose record etcd holds
// (stored, guarded by Coordinator.mu).

// analysisFlushEvery is the least time between two writes of the analysis
// records: the outcomes of that long are written in one.
const analysisFlushEvery = 250 * time.Millisecond

// analysisRetry bounds the pause between failed writes.
const analysisRetry = time.Second

// analysisStore is the writer's state.
type analysisStore struct {
	kick chan struct{}
	// stored are the updates whose analysis record etcd holds, as far as
	// this replica knows (restore read them, or the writer wrote them).
	stored map[string]bool
}

func newAnalysisStore() analysisStore {
	return analysisStore{kick: make(chan struct{}, 1), stored: make(map[string]bool)}
}

// kickAnalysis wakes the writer (without waiting).
func (o *orchestrator) kickAnalysis() {
	select {
	case o.analyses.kick <- struct{}{}:
	default:
	}
}

// analysisDirtyLocked notes that the windows of canary c changed.
func (o *orchestrator) analysisDirtyLocked(c *canaryRun) {
	if !c.dirty {
		c.dirty = true
		o.kickAnalysis()
	}
}

// analysisPhaseLocked wakes the writer when u, whose analysis record
// etcd holds, left its canary steps: the record is deleted.
func (o *orchestrator) analysisPhaseLocked(u *update) {
	if o.analyses.stored[u.rec.Id] && !u.analysing() {
		o.kickAnalysis()
	}
}

// analysing reports whether u's analysis runs (its windows are kept).
func (u *update) analysing() bool {
	return u.canary != nil && u.rec.Phase == pb.Phase_PHASE_CANARY && !u.rollback && !u.pending
}

// flushAnalyses writes the windows of the dirty canaries and deletes the
// records no canary in a step needs any more.
func (o *orchestrator) flushAnalyses(ctx context.Context) error {
	var puts []*pb.AnalysisRecord
	var dels []string
	now := time.Now()
	o.ev.lock()
	live := make(map[string]bool)
	for u := range o.upd.actives() {
		if !u.analysing() {
			continue
		}
		live[u.rec.Id] = true
		if u.canary.dirty {
			u.canary.dirty = false
			puts = append(puts, analysisRecord(u.rec.Id, u.canary, now))
		}
	}
	for id := range o.analyses.stored {
		if !live[id] {
			dels = append(dels, id)
		}
	}
	o.ev.unlock()

	ops := make([]storage.Op, 0, len(puts)+len(dels))
	for _, rec := range puts {
		op := storage.PutAnalysis(rec)
		if err := op.Err(); err != nil {
			return err // a record built here always encodes
		}
		ops = append(ops, op)
	}
	for _, id := range dels {
		ops = append(ops, storage.DeleteAnalysis(id))
	}
	var err error
	for len(ops) > 0 && err == nil {
		n := min(len(ops), storage.DefaultMaxOps)
		err = o.ev.commit(ctx, ops[:n]...)
		ops = ops[n:]
	}
	o.ev.lock()
	defer o.ev.unlock()
	if err != nil {
		// Written again, whole, at the next try.
		for _, rec := range puts {
			if u := o.upd.get(rec.UpdateId); u != nil && u.analysing() {
				u.canary.dirty = true
			}
		}
		return err
	}
	for _, rec := range puts {
		o.analyses.stored[rec.UpdateId] = true
		if u := o.upd.get(rec.UpdateId); u == nil || !u.analysing() {
			// It left its canary steps while this was written: the
			// record goes at the next flush.
			o.kickAnalysis()
		}
	}
	for _, id := range dels {
		delete(o.analyses.stored, id)
	}
	return nil
}

// runAnalysisStore writes the analysis records behind.
func (c *Coordinator) runAnalysisStore() {
	o := c.orch
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-o.analyses.kick:
		}
		select { // the outcomes of a while, in one write
		case <-c.ctx.Done():
			return
		case <-time.After(analysisFlushEvery):
		}
		for backoff := 10 * time.Millisecond; ; backoff = min(2*backoff, analysisRetry) {
			ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
			err := o.flushAnalyses(ctx)
			cancel()
			if err == nil {
				break
			}
			if errors.Is(err, ErrFenced) || c.ctx.Err() != nil {
				return // another replica leads, or stopping
			}
			c.lg.Warn("store canary analysis, retrying", "backoff", backoff, "error", err)
			select {
			case <-c.ctx.Done():
				return
			case <-time.After(backoff):
			}
		}
	}
}

// restoreAnalysesLocked adds the windows a previous leader stored to the
// canaries resumed in a step; every record read is the writer's to delete
// once no canary in a step needs it.
func (o *orchestrator) restoreAnalysesLocked(recs []*pb.AnalysisRecord) {
	now := time.Now()
	for _, rec := range recs {
		o.analyses.stored[rec.UpdateId] = true
		u := o.upd.get(rec.UpdateId)
		if u == nil || !u.analysing() {
			continue
		}
		old := u.canary.old.Restore(now, windowSlots(rec.OldVersion))
		nw := u.canary.new.Restore(now, windowSlots(rec.NewVersion))
		o.lg.Info("canary analysis resumed", "update", rec.UpdateId, "old_slots", old, "new_slots", nw,
			"old", u.canary.old.Stats(now), "new", u.canary.new.Stats(now))
	}
	if len(recs) > 0 {
		o.kickAnalysis()
	}
}

// analysisRecord is the stored form of canary c's windows.
func analysisRecord(id string, c *canaryRun, now time.Time) *pb.AnalysisRecord {
	return &pb.AnalysisRecord{UpdateId: id, OldVersion: windowRecord(c.old.Slots(now)), NewVersion: windowRecord(c.new.Slots(now))}
}

func windowRecord(slots []strategy.WindowSlot) *pb.AnalysisWindow {
	out := &pb.AnalysisWindow{Slots: make([]*pb.AnalysisSlot, len(slots))}
	for i, s := range slots {
		out.Slots[i] = &pb.AnalysisSlot{Start: timestamppb.New(s.Start), Calls: s.Calls, Errors: s.Errors, Latency: s.Latency}
	}
	return out
}

// windowSlots reads a stored window back (Window.Restore checks each slot).
func windowSlots(w *pb.AnalysisWindow) []strategy.WindowSlot {
	out := make([]strategy.WindowSlot, 0, len(w.GetSlots()))
	for _, s := range w.GetSlots() {
		if !s.GetStart().IsValid() {
			continue
		}
		out = append(out, strategy.WindowSlot{Start: s.Start.AsTime(), Calls: s.Calls, Errors: s.Errors, Latency: s.Latency})
	}
	return out
}
