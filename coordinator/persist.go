package coordinator

import (
	"context"
	"errors"
	"math"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
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
func (c *Coordinator) collect(max int) []clientv3.Op {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.eng.DirtyLen()
	if n == 0 {
		return nil
	}
	before := uint64(math.MaxUint64)
	if c.flushAll.Load() == 0 {
		before = c.epoch() - 1 // changes at least one full interval old
	}
	ops := make([]clientv3.Op, 0, min(n, max))
	c.eng.TakeDirtyBefore(before, max, func(r graph.Record) {
		key := c.keys.Txn(r.Txn)
		if r.Deleted {
			ops = append(ops, clientv3.OpDelete(key))
			return
		}
		s := c.ownerSessionLocked(r.Owner)
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
		val, err := proto.Marshal(rec)
		if err != nil {
			c.lg.Error("encode transaction record", "txn", r.Txn, "error", err)
			return
		}
		ops = append(ops, clientv3.OpPut(key, string(val), clientv3.WithLease(s.lease)))
	})
	return ops
}

// restore loads services, routes, sessions still leased, the
// self-preservation mode if one was active, and transaction records.
// Restored transactions are legacy: the coordinator did not see what
// they did, so each is assumed to have used every service and to possibly call
// it again, until it ends or its session's lease expires.
func (c *Coordinator) restore(ctx context.Context) error {
	start := time.Now()
	resp, err := c.cli.Get(ctx, c.keys.Services(), clientv3.WithPrefix())
	if err != nil {
		return err
	}
	var bad []badRecord
	c.mu.Lock()
	for _, kv := range resp.Kvs {
		var rec pb.ServiceRecord
		if err := decodeServiceRecord(kv.Value, &rec); err != nil {
			bad = append(bad, badRecord{kv, err})
			continue
		}
		c.deps[rec.Name] = rec.Dependencies
		c.declareLocked(rec.Name, rec.Dependencies)
	}
	c.mu.Unlock()
	if err := c.quarantine(ctx, "service", bad); err != nil {
		return err
	}

	if resp, err = c.cli.Get(ctx, c.keys.Routes(), clientv3.WithPrefix()); err != nil {
		return err
	}
	bad = nil
	c.mu.Lock()
	for _, kv := range resp.Kvs {
		svc := strings.TrimPrefix(string(kv.Key), c.keys.Routes())
		if err := errors.Join(storage.ValidName("service", svc), storage.ValidName("version", string(kv.Value))); err != nil {
			bad = append(bad, badRecord{kv, err})
			continue
		}
		c.routes[c.eng.Service(svc)] = c.eng.Version(string(kv.Value))
	}
	c.mu.Unlock()
	if err := c.quarantine(ctx, "route", bad); err != nil {
		return err
	}

	if resp, err = c.cli.Get(ctx, c.keys.Sessions(), clientv3.WithPrefix()); err != nil {
		return err
	}
	bad = nil
	c.mu.Lock()
	for _, kv := range resp.Kvs {
		rec := &pb.SessionRecord{}
		if err := decodeSessionRecord(kv.Value, rec); err != nil {
			bad = append(bad, badRecord{kv, err})
			continue
		}
		hb := rec.GetHeartbeatInterval().AsDuration()
		c.addSessionLocked(rec, c.sessionTTL(hb, rec.AllowedMisses))
		c.resyncWait[rec.InstanceId] = struct{}{}
	}
	// Refresh them at once, before the (long) read of transaction records:
	// the time without a leader must not expire live sidecars (again in
	// Start once the watch runs).
	for _, s := range c.sessions {
		c.leases.Heartbeat(s.lease)
	}
	c.mu.Unlock()
	if err := c.quarantine(ctx, "session", bad); err != nil {
		return err
	}
	if err := c.restoreSelfPreservation(ctx); err != nil {
		return err
	}

	if resp, err = c.cli.Get(ctx, c.keys.Updates(), clientv3.WithPrefix()); err != nil {
		return err
	}
	bad = nil
	for _, kv := range resp.Kvs {
		rec := &pb.Update{}
		strat, err := decodeUpdateRecord(kv.Value, rec)
		if err != nil {
			bad = append(bad, badRecord{kv, err})
			continue
		}
		u := &update{rec: rec, strat: strat, changed: make(chan struct{})}
		c.mu.Lock()
		c.updates[rec.Id] = u
		c.resumeLocked(u)
		c.mu.Unlock()
	}
	if err := c.quarantine(ctx, "update", bad); err != nil {
		return err
	}
	if err := c.restorePins(ctx); err != nil {
		return err
	}

	txns := 0
	key, end := c.keys.Txns(), clientv3.GetPrefixRangeEnd(c.keys.Txns())
	for {
		resp, err := c.cli.Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(restorePage))
		if err != nil {
			return err
		}
		bad = nil
		c.mu.Lock()
		for _, kv := range resp.Kvs {
			var rec pb.TxnRecord
			if err := decodeTxnRecord(kv.Value, &rec); err != nil {
				bad = append(bad, badRecord{kv, err})
				continue
			}
			s := c.sessions[rec.Owner]
			if s == nil || int64(s.lease) != kv.Lease {
				continue // its session is gone; the record goes with the lease
			}
			used := make([]graph.Use, 0, len(rec.Used))
			for _, u := range rec.Used {
				used = append(used, graph.Use{Service: c.eng.Service(u.Service), Version: c.eng.Version(u.Version)})
			}
			if err := c.eng.AddLegacy(rec.TxnId, s.owner, c.legacyUsesLocked(rec.TxnId, used)); err == nil {
				txns++
			}
		}
		c.mu.Unlock()
		if err := c.quarantine(ctx, "txn", bad); err != nil {
			return err
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	// The restored records are in etcd already: nothing to write back.
	c.mu.Lock()
	c.eng.TakeDirty(c.eng.DirtyLen(), func(graph.Record) {})
	c.mu.Unlock()
	c.lg.Info("restored state", "services", len(c.deps), "sessions", len(c.sessions), "txns", txns,
		"took", time.Since(start))
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
	return strategy.For(rec.Strategy)
}

func decodeTxnRecord(b []byte, rec *pb.TxnRecord) error {
	if err := proto.Unmarshal(b, rec); err != nil {
		return err
	}
	return validTxnID(rec.TxnId)
}
