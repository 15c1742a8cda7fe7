package coordinator

import (
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/graph"
	"github.com/coordinator/coordinator/strategy"
)

// Failover and restart (DESIGN.md §6). A coordinator that starts on state
// another one left (a new leader, or the same replica restarted) did not
// see the transactions already running: those it learns of from their
// records or from their entry's resync are legacy, assumed to use every
// service and to call it again. Updates resume from their persisted phase;
// no switch happens until every session known in etcd has re-registered or
// expired (switchHoldLocked). A self-preservation mode the previous leader
// stored resumes too (restoreSelfPreservationLocked): the sessions it
// queued are not in etcd any more, and no switch happens until they too
// have re-registered or their grace has ended.

// resumeLocked takes an update read from etcd back where its persisted
// phase says. Unfinished, it is active again: its service is in update mode
// (every session acknowledges it anew), timeouts count from its creation.
func (o *orchestrator) resumeLocked(u *update) {
	st := strategy.Resume(u.rec.Phase, u.rec.RollingBack, strategy.Options{})
	u.switched, u.rollback = st.Switched, st.RollingBack
	if st.Finished() {
		return // its record is all that is kept: it names no service of the graph
	}
	o.setMembers(u)
	if u.rec.Canary != nil {
		// Its step, weight, pause and counts are in the record; its
		// analysis windows are added once read (restoreAnalysesLocked).
		u.canary = newCanaryRun(u.rec.Canary)
	}
	u.started = u.rec.GetCreatedAt().AsTime()
	if u.rec.PrepareTimeout.AsDuration() <= 0 {
		// Stored before updates had the bound: the server's applies.
		u.rec.PrepareTimeout = durationpb.New(o.cfg.PrepareTimeout)
	}
	if u.rec.Timeout.AsDuration() <= 0 && (u.strat.Kind() == strategy.WF || u.strat.Kind() == strategy.BF) {
		u.rec.Timeout = durationpb.New(o.cfg.UpdateTimeout)
	}
	if !u.strat.UpdateMode() {
		// The baseline has no update mode: its switch was the whole update.
		o.setUpdateModeLocked(u, false)
	} else {
		u.prepareRev = o.setUpdateModeLocked(u, true)
	}
	o.upd.activate(u)
	o.lg.Info("update resumed", "update", u.rec.Id, "services", u.subject(), "phase", u.rec.Phase,
		"rolling_back", u.rollback)
}

// restorePinsLocked keeps the first-use pins read from etcd (service ->
// transaction -> version) of the services mid-update.
func (o *orchestrator) restorePinsLocked(pins map[string]map[string]string) {
	for svc, byTxn := range pins {
		id, ok := o.eng.LookupService(svc)
		if !ok || o.upd.active(id) == nil {
			continue // left by an update that finished
		}
		for txn, v := range byTxn {
			o.upd.restorePin(id, txn, o.eng.Version(v))
		}
	}
}

// legacyUsesLocked completes what a legacy transaction is known to have
// used (its record, or nothing) for the services mid-update with pinning
// (CV) once switched: the version its first-use pin names, committed
// before that call was answered; without a pin at a service it did not
// call it during the update, so it is on the side of its pin at another
// member of the set (DESIGN.md §4.8). With no pin at any member, its
// record may still name a member at a version (the call was applied and
// written behind, its pin not committed yet, its answer not sent: the
// call, sent again, goes there): it is on that side. With neither, if it
// used the set at all it was at the old versions, and the old versions
// are where it must go.
func (o *orchestrator) legacyUsesLocked(txn string, used []graph.Use) []graph.Use {
	for u := range o.upd.actives() {
		if !u.strat.Pins() || !u.bothLive() {
			continue
		}
		side := strategy.Old
		for _, use := range used {
			if m := u.member(use.Service); m != nil {
				side = m.side(use.Version)
				break
			}
		}
		for i := range u.members {
			m := &u.members[i]
			_, own := o.upd.restoredPin(m.svc, txn)
			v, pinned := o.restoredSetPin(u, m, txn)
			if !pinned {
				v = m.version(side)
			}
			found := false
			for i := range used {
				if used[i].Service == m.svc {
					found = true
					if own {
						used[i].Version = v
					}
				}
			}
			if !found {
				used = append(used, graph.Use{Service: m.svc, Version: v})
			}
		}
	}
	return used
}
