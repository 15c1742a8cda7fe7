// Package storage is the coordinator's access to etcd.
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
// WriteBehind commits writes in batches, MaxOps ops per etcd transaction,
// at most one transaction in flight, in the order the source hands them
// over; the source coalesces several writes of a key into one. Its
// transactions can be fenced by a compare on the leader's election key:
// once the compare fails it stops (ErrFenced).
//
// Cache mirrors prefixes in memory by list-and-watch, relisting when the
// watch falls behind a compaction; the leader serves its reads from it.
//
// Check tells whether etcd can serve (a linearizable read and no alarm),
// for /health. MeasurePuts measures etcd's raw put rate.
//
// Errors wrap the sentinel errors below (ErrLeaseExpired, ErrFenced,
// ErrUnavailable, ErrInvalidName, ErrClosed); test them with errors.Is.
// Logs use log/slog with the fields component, error, lease, ops, rev.
package storage
