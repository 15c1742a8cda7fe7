package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
	"github.com/coordinator/coordinator/strategy"
)

// restorePage is how many transaction records one restore read fetches.
const restorePage = 10000

// collect hands the write-behind up to max ops for the transactions that
// changed since the last call. Records are encoded here, under the lock, so
// several events of one transaction in a window become one put.
func (c *Coordinator) collect(max int) []storage.Op {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.eng.DirtyLen()
	if n == 0 && !c.orch.hasMootPins() {
		return nil
	}
	before := uint64(math.MaxUint64)
	if c.flushAll.Load() == 0 {
		before = c.epoch() - 1 // changes at least one full interval old
	}
	ops := make([]storage.Op, 0, min(n, max))
	taken := c.eng.TakeDirtyBefore(before, max, func(r graph.Record) {
		if r.Deleted {
			ops = append(ops, storage.DeleteTxn(r.Txn))
			return
		}
		s := c.sess.liveOwner(r.Owner)
		if s == nil {
			return // no owning session (yet): nothing to attach the record to
		}
		rec := &pb.TxnRecord{
			TxnId:  r.Txn,
			Owner:  s.rec.InstanceId,
			Entry:  c.eng.ServiceName(r.Entry),
			Legacy: r.Legacy,
			Used:   make([]*pb.ServiceVersion, 0, len(r.Used)),
		}
		for _, u := range r.Used {
			rec.Used = append(rec.Used, &pb.ServiceVersion{
				Service: c.eng.ServiceName(u.Service),
				Version: c.eng.VersionName(u.Version),
			})
		}
		op := storage.PutTxn(rec, s.lease)
		if err := op.Err(); err != nil {
			c.lg.Error("encode transaction record", "txn", r.Txn, "error", err)
			return
		}
		ops = append(ops, op)
	})
	return c.orch.appendMootPinsLocked(ops, max, before, taken < max)
}

// restore loads services, routes, sessions still leased, the
// self-preservation mode if one was active, updates and their pins, and
// transaction records. Restored transactions are legacy: the coordinator
// did not see what they did, so each is assumed to have used every service
// and to possibly call it again, until it ends or its session's lease
// expires.
//
// The state but the transaction records is read first, at one revision
// (Store.Load), and applied in one locked section; the
// transaction records, which may be many, follow page by page, each page
// read and then applied.
func (c *Coordinator) restore(ctx context.Context) error {
	start := time.Now()
	st, err := c.readState(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.applyStateLocked(st)
	c.mu.Unlock()
	// The records that could not be decoded are moved aside (etcd
	// writes: after the locked section), in the order restore read them.
	for _, q := range st.bad {
		if err := c.quarantine(ctx, q.kind, q.bad); err != nil {
			return err
		}
	}

	var bad []badRecord
	txns := 0
	after := ""
	for {
		recs, more, err := c.store.Txns(ctx, after, restorePage)
		if err != nil {
			return err
		}
		bad = nil
		c.mu.Lock()
		for _, kv := range recs {
			var rec pb.TxnRecord
			if err := decodeTxnRecord(kv.Value, &rec); err != nil {
				bad = append(bad, badRecord{kv, err})
				continue
			}
			s := c.sess.get(rec.Owner)
			if s == nil || s.lease != kv.Lease {
				continue // its session is gone; the record goes with the lease
			}
			used := make([]graph.Use, 0, len(rec.Used))
			for _, u := range rec.Used {
				used = append(used, graph.Use{Service: c.eng.Service(u.Service), Version: c.eng.Version(u.Version)})
			}
			if err := c.eng.AddLegacy(rec.TxnId, s.owner, c.orch.legacyUsesLocked(rec.TxnId, used)); err == nil {
				txns++
			}
		}
		c.mu.Unlock()
		if err := c.quarantine(ctx, "txn", bad); err != nil {
			return err
		}
		if !more || len(recs) == 0 {
			break
		}
		after = recs[len(recs)-1].Name
	}
	// The restored records are in etcd already: nothing to write back.
	c.mu.Lock()
	c.eng.TakeDirty(c.eng.DirtyLen(), func(graph.Record) {})
	c.mu.Unlock()
	c.lg.Info("restored state", "services", c.cat.recorded(), "sessions", c.sess.len(), "txns", txns,
		"took", time.Since(start))
	return nil
}

// storedState is what restore reads from etcd before the transaction
// records, decoded.
type storedState struct {
	services []*pb.ServiceRecord
	routes   map[string]string // service -> default version
	sessions []*pb.SessionRecord
	sp       *pb.SelfPreservationRecord // nil: none stored
	updates  []*pb.Update
	pins     map[string]map[string]string // service -> txn -> version
	analyses []*pb.AnalysisRecord
	lanes    []*pb.Lane
	// bad are the records that could not be decoded, by kind, to
	// quarantine once the rest is applied.
	bad []quarantined
}

// quarantined are records of one kind that restore moves aside.
type quarantined struct {
	kind string
	bad  []badRecord
}

// readState reads and decodes the state restore applies first. A record
// that cannot be decoded (decodeServiceRecord and the others below) is
// left out and listed in bad.

func (c *Coordinator) readState(ctx context.Context) (*storedState, error) {
	loaded, err := c.store.Load(ctx)
	if err != nil {
		return nil, err
	}
	st := &storedState{routes: map[string]string{}, pins: map[string]map[string]string{}}
	var bad []badRecord
	setAside := func(kind string) {
		if len(bad) > 0 {
			st.bad = append(st.bad, quarantined{kind, bad})
		}
		bad = nil
	}
	for _, kv := range loaded.Services {
		rec := &pb.ServiceRecord{}
		if err := decodeServiceRecord(kv.Value, rec); err != nil {
			bad = append(bad, badRecord{kv, err})
			continue
		}
		st.services = append(st.services, rec)
	}
	setAside("service")
	for _, kv := range loaded.Routes {
		svc := kv.Name
		if err := errors.Join(storage.ValidName("service", svc), storage.ValidName("version", string(kv.Value))); err != nil {
			bad = append(bad, badRecord{kv, err})
			continue
		}
		st.routes[svc] = string(kv.Value)
	}
	setAside("route")
	for _, kv := range loaded.Sessions {
		rec := &pb.SessionRecord{}
		if err := decodeSessionRecord(kv.Value, rec); err != nil {
			bad = append(bad, badRecord{kv, err})
			continue
		}
		st.sessions = append(st.sessions, rec)
	}
	setAside("session")
	if sp := loaded.SelfPreservation; sp != nil {
		rec := &pb.SelfPreservationRecord{}
		if err := proto.Unmarshal(sp.Value, rec); err != nil {
			// Without it the mode does not resume: as if it had not been
			// active (the sessions it queued are gone already).
			bad = append(bad, badRecord{*sp, err})
		} else {
			st.sp = rec
		}
	}
	setAside("selfpreservation")
	for _, kv := range loaded.Updates {
		rec := &pb.Update{}
		if _, err := decodeUpdateRecord(kv.Value, rec); err != nil {
			bad = append(bad, badRecord{kv, err})
			continue
		}
		st.updates = append(st.updates, rec)
	}
	setAside("update")
	for _, kv := range loaded.Pins {
		svc, txn, _ := strings.Cut(kv.Name, "/")
		if err := errors.Join(storage.ValidName("service", svc), validTxnID(txn),
			storage.ValidName("version", string(kv.Value))); err != nil {
			bad = append(bad, badRecord{kv, err})
			continue
		}
		if st.pins[svc] == nil {
			st.pins[svc] = map[string]string{}
		}
		st.pins[svc][txn] = string(kv.Value)
	}
	setAside("pin")
	for _, kv := range loaded.Analyses {
		rec := &pb.AnalysisRecord{}
		if err := proto.Unmarshal(kv.Value, rec); err != nil {
			bad = append(bad, badRecord{kv, err})
			continue
		}
		if rec.UpdateId != kv.Name {
			bad = append(bad, badRecord{kv, fmt.Errorf("analysis record of update %q under the key of %q", rec.UpdateId, kv.Name)})
			continue
		}
		st.analyses = append(st.analyses, rec)
	}
	setAside("analysis")
	for _, kv := range loaded.Lanes {
		rec := &pb.Lane{}
		if err := decodeLaneRecord(kv.Value, rec); err != nil {
			bad = append(bad, badRecord{kv, err})
			continue
		}
		st.lanes = append(st.lanes, rec)
	}
	setAside("lane")
	return st, nil
}

// applyStateLocked applies what readState read, in the order each part
// needs: services and routes, sessions (each awaiting its resync, its lease
// refreshed at once: the time without a leader must not expire live
// sidecars, and the read of transaction records may be long; again in
// Start once the watch runs), the self-preservation mode, updates from
// their phases, and the pins of those mid-update.
func (c *Coordinator) applyStateLocked(st *storedState) {
	for _, rec := range st.services {
		c.cat.setRecord(rec.Name, rec.Dependencies)
		c.declareLocked(rec.Name, rec.Dependencies)
	}
	for svc, v := range st.routes {
		id := c.eng.Service(svc)
		c.cat.setRoute(id, svc, c.eng.Version(v), v)
		c.routing.changed(id, svc)
	}
	for _, rec := range st.sessions {
		hb := rec.GetHeartbeatInterval().AsDuration()
		c.addSessionLocked(rec, c.sessionTTL(hb, rec.AllowedMisses))
		c.sess.awaitResync(rec.InstanceId)
	}
	for s := range c.sess.all() {
		c.leases.Heartbeat(s.lease)
	}
	if st.sp != nil {
		c.sp.restoreSelfPreservationLocked(st.sp)
	}
	for _, rec := range st.updates {
		strat, _ := strategy.For(rec.Strategy) // decodeUpdateRecord checked it
		u := &update{rec: rec, strat: strat, changed: make(chan struct{})}
		c.orch.upd.keep(u)
		c.orch.resumeLocked(u)
	}
	c.orch.restorePinsLocked(st.pins)
	c.orch.restoreAnalysesLocked(st.analyses)
	for _, l := range st.lanes {
		c.lanes.put(l)
	}
	if len(st.lanes) > 0 {
		c.routing.lanesChanged()
	}
}

// decodeLaneRecord decodes a stored lane and checks it as CreateLane did
// (its members' names become map keys and header values).
func decodeLaneRecord(b []byte, rec *pb.Lane) error {
	if err := proto.Unmarshal(b, rec); err != nil {
		return err
	}
	n, err := normalizeLane(rec)
	if err != nil {
		return err
	}
	if n.Header != rec.Header || n.Tag != rec.Tag {
		return fmt.Errorf("%w: lane %s: header or tag not set", ErrInvalidArgument, rec.Name)
	}
	return nil
}

// The decoders of restore: an error means the record is quarantined
// (quarantine.go). Besides proto decoding they check what restore relies
// on: the names that become keys and map keys.

func decodeServiceRecord(b []byte, rec *pb.ServiceRecord) error {
	if err := proto.Unmarshal(b, rec); err != nil {
		return err
	}
	return storage.ValidName("service", rec.Name)
}

func decodeSessionRecord(b []byte, rec *pb.SessionRecord) error {
	if err := proto.Unmarshal(b, rec); err != nil {
		return err
	}
	return errors.Join(storage.ValidName("instance", rec.InstanceId),
		storage.ValidName("service", rec.Service), storage.ValidName("version", rec.Version))
}

func decodeUpdateRecord(b []byte, rec *pb.Update) (strategy.Strategy, error) {
	if err := proto.Unmarshal(b, rec); err != nil {
		return nil, err
	}
	if err := errors.Join(storage.ValidName("update", rec.Id), storage.ValidName("service", rec.Service),
		storage.ValidName("version", rec.ToVersion)); err != nil {
		return nil, err
	}
	for _, m := range rec.Members {
		if err := errors.Join(storage.ValidName("service", m.Service), storage.ValidName("version", m.ToVersion)); err != nil {
			return nil, err
		}
	}
	return strategy.For(rec.Strategy)
}

func decodeTxnRecord(b []byte, rec *pb.TxnRecord) error {
	if err := proto.Unmarshal(b, rec); err != nil {
		return err
	}
	return validTxnID(rec.TxnId)
}
