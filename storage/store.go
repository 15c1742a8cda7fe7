package storage

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Store is the coordinator's whole access to its durable state: sessions,
// services, routes, updates, pins, transaction records and the
// self-preservation record, with the leases they hang on and the leader's
// fencing. It is typed: writes are Ops built by the constructors below
// (PutSession, PutPin, DeleteServicePins, ...), reads return the records of
// each kind. Keys and encodings are the store's business (Keys lays them
// out).
//
// Etcd (NewEtcd) is the implementation on etcd; storage/memstore is one in
// memory for component tests, and storage/storetest the conformance suite
// both pass.
//
// Fencing: every write (Commit, CreateRoute, Quarantine) of a fenced store
// is conditional on the leader still holding its election key; when that
// no longer holds nothing is written and the error wraps ErrFenced.
//
// A Store is safe for concurrent use.
type Store interface {
	// Commit applies ops atomically, all or none, fenced. The error wraps
	// ErrFenced when the fence failed, ErrLeaseExpired when a put names a
	// lease the store no longer knows, ErrRefused when the store refuses
	// the transaction as invalid (more than DefaultMaxOps ops, two ops on
	// one key, an op that could not be encoded), and otherwise the
	// transient cause (unreachable, timeout): retrying may succeed.
	Commit(ctx context.Context, ops ...Op) error
	// CreateRoute stores version as service's route unless it has one
	// already, fenced, and returns the route stored now.
	CreateRoute(ctx context.Context, service, version string) (string, error)
	// Quarantine moves rec (read by Load or Txns) to Keys.Quarantined of
	// its key, without a lease, if it has not changed since it was read
	// (same mod revision), fenced. It returns the key it moved it to. A
	// record changed meanwhile gives ErrChanged.
	Quarantine(ctx context.Context, rec Record) (string, error)

	// Load reads every record but the transaction records, at one
	// revision.
	Load(ctx context.Context) (*State, error)
	// Txns returns up to limit transaction records with ids after after
	// ("" for the first), in id order, and whether more follow.
	Txns(ctx context.Context, after string, limit int) (recs []Record, more bool, err error)
	// Quarantined returns how many records are quarantined and the keys
	// of up to limit of them, each its original key's path under Root.
	Quarantined(ctx context.Context, limit int) (n int64, keys []string, err error)

	// Grant creates a lease of ttl (MinTTL at least, whole seconds) and
	// returns it with the TTL the store set.
	Grant(ctx context.Context, ttl time.Duration) (LeaseID, time.Duration, error)
	// KeepAliveOnce refreshes lease id once and returns its TTL; a lease
	// the store no longer knows gives ErrLeaseExpired. Leases runs these
	// asynchronously for heartbeats.
	KeepAliveOnce(ctx context.Context, id LeaseID) (time.Duration, error)
	// TimeToLive returns what is left of lease id; ErrLeaseExpired if the
	// store no longer knows it.
	TimeToLive(ctx context.Context, id LeaseID) (time.Duration, error)
	// Revoke ends lease id at once, deleting the records attached to it;
	// ErrLeaseExpired if the store no longer knows it.
	Revoke(ctx context.Context, id LeaseID) error

	// WatchSessions starts following the session records: it returns once
	// their current state is loaded, then calls gone, one call at a time
	// in store order, for each session record deleted (deleted, or its
	// lease expired or was revoked). gone must not call the watch's Close.
	WatchSessions(ctx context.Context, gone func(SessionGone)) (SessionWatch, error)

	// Check reports whether the store can serve (for /health): an error
	// wrapping ErrUnavailable when it cannot.
	Check(ctx context.Context) error
	// Keys is the key layout of the store.
	Keys() Keys
}

// LeaseID names a lease; NoLease is none.
type LeaseID int64

// NoLease is the lease of a record attached to none.
const NoLease LeaseID = 0

// SessionWatch is a running session watch (Store.WatchSessions).
type SessionWatch interface {
	// Lease returns the lease of instance's session record as the watch
	// last saw it, false if it saw none.
	Lease(instance string) (LeaseID, bool)
	// Close stops the watch and waits for a gone call in progress.
	Close()
}

// SessionGone is a deleted session record.
type SessionGone struct {
	Instance string
	// Lease is the lease the record had.
	Lease LeaseID
	// Prev is the record's last value (nil if not known).
	Prev []byte
	// Rev is the store revision of the deletion.
	Rev int64
}

// Record is a stored record as read, before decoding: restore decodes it
// and quarantines it if it cannot.
type Record struct {
	// Key is the record's full key (Keys).
	Key string
	// Name is the key's path under the prefix of its kind: the service,
	// instance, update or transaction id; "service/txn" for a pin; "" for
	// the self-preservation record.
	Name   string
	Value  []byte
	ModRev int64
	Lease  LeaseID
}

// State is every record but the transaction records, at revision Rev,
// each kind in key order.
type State struct {
	Rev              int64
	Services         []Record
	Routes           []Record // value: the version
	Sessions         []Record
	SelfPreservation *Record // nil: none stored
	Updates          []Record
	Pins             []Record // value: the version
	Analyses         []Record // canaries' analysis windows, by update id
	Lanes            []Record // value: a coordinatorv1.Lane
}

type opKind uint8

const (
	opPut opKind = iota + 1
	opDelete
	opDeletePrefix
)

// Op is one write of a Commit, built by the constructors below: a put or
// a delete of one record, or the deletion of a service's pins.
type Op struct {
	kind  opKind
	rel   string // key under Keys.Root; a prefix for opDeletePrefix
	val   []byte
	lease LeaseID
	err   error // encoding error: Commit refuses the op
}

// Key is the op's key (its prefix, for DeleteServicePins) under the root
// of the key space: two ops with the same Key write the same record.
func (o Op) Key() string { return o.rel }

// Lease is the lease a put attaches its record to (NoLease for others).
func (o Op) Lease() LeaseID { return o.lease }

// IsPut reports whether the op writes a record (else it deletes).
func (o Op) IsPut() bool { return o.kind == opPut }

// IsPrefix reports whether the op deletes every record under Key (a
// prefix: DeleteServicePins).
func (o Op) IsPrefix() bool { return o.kind == opDeletePrefix }

// Err is the error encoding the op's record, if any; Commit refuses such
// an op with ErrRefused.
func (o Op) Err() error { return o.err }

// IsZero reports whether o is the zero Op (built by no constructor).
func (o Op) IsZero() bool { return o.kind == 0 }

// Value is what a put writes (nil for others).
func (o Op) Value() []byte { return o.val }

func putProto(rel string, m proto.Message, lease LeaseID) Op {
	val, err := proto.Marshal(m)
	return Op{kind: opPut, rel: rel, val: val, lease: lease, err: err}
}

// PutSession stores a sidecar session, attached to its lease.
func PutSession(rec *pb.SessionRecord, lease LeaseID) Op {
	return putProto(relSession(rec.GetInstanceId()), rec, lease)
}

// DeleteSession deletes instance's session record.
func DeleteSession(instance string) Op { return Op{kind: opDelete, rel: relSession(instance)} }

// PutService stores a service record (its static edges).
func PutService(rec *pb.ServiceRecord) Op { return putProto(relService(rec.GetName()), rec, NoLease) }

// DeleteService deletes a service record.
func DeleteService(name string) Op { return Op{kind: opDelete, rel: relService(name)} }

// PutRoute sets a service's default version.
func PutRoute(service, version string) Op {
	return Op{kind: opPut, rel: relRoute(service), val: []byte(version)}
}

// DeleteRoute deletes a service's route.
func DeleteRoute(service string) Op { return Op{kind: opDelete, rel: relRoute(service)} }

// PutUpdate stores an update record.
func PutUpdate(rec *pb.Update) Op { return putProto(relUpdate(rec.GetId()), rec, NoLease) }

// DeleteUpdate deletes an update record.
func DeleteUpdate(id string) Op { return Op{kind: opDelete, rel: relUpdate(id)} }

// PutPin stores transaction txn's first-use pin of service (the version
// it used there), attached to lease (NoLease: kept until deleted).
func PutPin(service, txn, version string, lease LeaseID) Op {
	return Op{kind: opPut, rel: relPin(service, txn), val: []byte(version), lease: lease}
}

// DeletePin deletes the first-use pin of txn on service, once txn has
// ended (a pin that was never written costs a no-op delete).
func DeletePin(service, txn string) Op { return Op{kind: opDelete, rel: relPin(service, txn)} }

// DeleteServicePins deletes every pin of service.
func DeleteServicePins(service string) Op {
	return Op{kind: opDeletePrefix, rel: relServicePins(service)}
}

// PutTxn stores a transaction record, attached to its root session's lease.
func PutTxn(rec *pb.TxnRecord, lease LeaseID) Op {
	return putProto(relTxn(rec.GetTxnId()), rec, lease)
}

// DeleteTxn deletes a transaction record.
func DeleteTxn(id string) Op { return Op{kind: opDelete, rel: relTxn(id)} }

// PutSelfPreservation stores the self-preservation record.
func PutSelfPreservation(rec *pb.SelfPreservationRecord) Op {
	return putProto(relSelfPreservation, rec, NoLease)
}

// PutAnalysis stores a canary's analysis record.
func PutAnalysis(rec *pb.AnalysisRecord) Op {
	return putProto(relAnalysis(rec.GetUpdateId()), rec, NoLease)
}

// DeleteAnalysis deletes the analysis record of update id.
func DeleteAnalysis(id string) Op { return Op{kind: opDelete, rel: relAnalysis(id)} }

// PutLane stores a lane (DESIGN.md §4.9).
func PutLane(rec *pb.Lane) Op { return putProto(relLane(rec.GetName()), rec, NoLease) }

// DeleteLane deletes a lane.
func DeleteLane(name string) Op { return Op{kind: opDelete, rel: relLane(name)} }

// DeleteSelfPreservation deletes the self-preservation record.
func DeleteSelfPreservation() Op { return Op{kind: opDelete, rel: relSelfPreservation} }
