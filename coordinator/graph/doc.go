// Package graph is the coordinator's dependency-graph engine.
//
// It owns the in-memory state that freeness is decided on (DESIGN.md §2): the
// interned services and versions, the static call graph and its reachability,
// and every live distributed transaction with its running sub-transactions,
// "done" hints and first-use versions. From these it keeps, per transaction,
// the set of services it blocks (hasFuture ∧ hasPast) and, per service, the
// index of the transactions blocking it, so that Free is O(1) and Blockers
// is a lookup.
//
// Events of one transaction come from several sidecar streams, each in its
// own order. Once all of them have arrived, in any such interleaving, the
// engine answers as in-order delivery would: per transaction it remembers
// the returned sub-transactions (a late nested Call does not start one
// again) and keeps the Done hints that came before the Call of their
// sub-transaction, both bounded and freed with the transaction (reorder.go).
// Events that changed nothing because they came late fail with
// ErrTxnEnded, ErrSubReturned or ErrEarlyLimit.
//
// It also owns the write-behind bookkeeping of transaction records (which
// transactions changed since the last TakeDirty), but no I/O.
//
// The package is pure: no I/O, goroutines or logging. An Engine is not safe
// for concurrent use; the caller serializes every call, typically under the
// same mutex that makes event application atomic with freeness checks.
package graph
