// Package coordinator owns the live state of a coordinator replica: the
// dependency-graph engine (package graph) behind one mutex, the sidecar
// sessions and their leases, the application of sidecar events in stream
// order, the write-behind of transaction records, the restore of that state
// after a restart, and the gRPC services for sidecars and operators.
//
// Who owns what:
//   - package coordinator owns the in-memory state and decides what is
//     written and when (records are encoded, and a phase change is decided,
//     here); it never builds a key, an etcd op or an etcd error itself, and
//     imports no etcd package.
//   - package storage owns the durable state behind one typed interface,
//     storage.Store (Config.Store): the writes as typed ops committed
//     atomically and fenced (storage.PutSession, PutPin, DeleteServicePins,
//     PutTxn, ...), the reads of restore (Load, Txns), leases, the session
//     watch, the health check and the quarantine. storage.Leases (async
//     heartbeats) and storage.WriteBehind (batched transaction records) run
//     on that Store. Its key layout is storage.Keys; its errors are the
//     storage sentinels (ErrFenced, ErrLeaseExpired, ...), which this
//     package maps to its own (commit, checkFence).
//   - package coordinator/server owns etcd itself: the client, the
//     election (concurrency.Election) and, per leadership term, the
//     storage.Etcd store fenced on the election key, given to New.
//
// Tests: components that claim nothing about durability may run on
// storage/memstore (memharness_test.go), which passes the conformance
// suite (storage/storetest) that storage.Etcd passes on embedded etcd;
// restore, failover, quarantine and integration/ tests run on embedded
// etcd (coordinator/server/servertest). The engine itself does no I/O.
//
// Errors: domain code returns sentinel errors (ErrUnknownService,
// ErrUpdateInProgress, ErrInvalidArgument, ErrUnavailable, ..., and those of
// packages graph and storage) wrapped with %w in a message that names what
// was wrong, and never builds a gRPC status. The gRPC edge (edge.go: the
// AdminService methods; the sidecar stream's Connect; each event error of an
// Ack) turns them into statuses once, with toGRPCError and its table of
// sentinels and codes. errors.go documents the sentinels, the table and what
// an error no sentinel matches becomes.
package coordinator
