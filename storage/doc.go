// Package storage owns the coordinator's durable state.
//
// Store is the one interface the coordinator uses for it: typed write ops
// (PutSession, PutService, PutRoute, PutUpdate, PutPin, DeleteServicePins,
// PutTxn, PutSelfPreservation, their deletes) committed atomically and
// fenced by one Commit; CreateRoute and Quarantine, the two conditional
// writes; Load (every record but the transaction records, at one
// revision), Txns (those, page by page) and Quarantined; leases (Grant,
// KeepAliveOnce, TimeToLive, Revoke) with its own LeaseID; a session
// watch; Check. Etcd implements it on an etcd client, fenced by the
// leader's election key (Fence); storage/memstore implements it in memory
// for component tests; storage/storetest is the conformance suite both
// pass. Package coordinator imports no etcd package: only this package
// (and coordinator/server, for the client and the election) does.
//
// The key space lives under one prefix (Keys, DefaultPrefix): services and
// their static edges, sidecar sessions, routes, updates, pins of services
// mid-update, transaction records and the leader election.
//
// Leases gives each sidecar session a lease of SessionTTL(interval,
// misses) and refreshes it asynchronously: a heartbeat never waits for
// etcd; at most one keep-alive per lease is in flight and a heartbeat
// arriving meanwhile gets the last result at once (ServiceCenter's
// asynchronous heartbeat).
//
// WriteBehind commits writes to a Store in batches, MaxOps ops per
// Commit, at most one Commit in flight, in the order the source hands
// them over; the source coalesces several writes of a key into one. The
// store fences its commits: once one fails its fence the write-behind
// stops (ErrFenced).
//
// Leases and WriteBehind run on any Store; on etcd each keep-alive and
// each batch is one etcd request, as before the Store existed.
//
// Cache mirrors prefixes of etcd in memory by list-and-watch, relisting
// when the watch falls behind a compaction; Etcd's session watch is one.
//
// Check tells whether etcd can serve (a linearizable read and no alarm),
// for /health. MeasurePuts measures etcd's raw put rate.
//
// Errors wrap the sentinel errors below (ErrLeaseExpired, ErrFenced,
// ErrRefused, ErrChanged, ErrUnavailable, ErrInvalidName, ErrClosed); test
// them with errors.Is.
// Logs use log/slog with the fields component, error, lease, ops, rev.
package storage
