// Package coordinator owns the live state of a coordinator replica: the
// sidecar sessions and their leases, the application of sidecar events in
// stream order over the dependency-graph engine (package graph), the
// updates and their strategies' phase machines (package strategy), the
// write-behind of transaction records, the restore of that state after a
// restart, and the gRPC services for sidecars and operators.
//
// # Packages
//
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
//   - package coordinator/eventwire owns how a sidecar stream comes off
//     the wire: its frames are read undecoded (the codec a server serving
//     SidecarServer must run with: ServerOptions) and event batches decoded
//     into pooled event structs, which the stream's handler releases once
//     the batch is applied; anything else decodes as protobuf decodes it.
//   - package coordinator/server owns etcd itself: the client, the
//     election (concurrency.Election) and, per leadership term, the
//     storage.Etcd store fenced on the election key, given to New. It wires
//     the gRPC services to listeners.
//
// Tests: components that claim nothing about durability may run on
// storage/memstore (memharness_test.go), which passes the conformance
// suite (storage/storetest) that storage.Etcd passes on embedded etcd;
// restore, failover, quarantine and integration/ tests run on embedded
// etcd (coordinator/server/servertest). The engine itself does no I/O.
//
// # Who owns what in this package
//
// Coordinator is the event applier: it holds the event lock (mu), the
// engine and the transactions awaiting their BEGIN, and composes the
// components below. One goroutine of it, the applier (applier.go),
// applies the event batches of every stream in the order their handlers
// hand them in; a handler waits for its batch's Ack and sends it. Each
// component owns its state and says so in its file; the others use its
// methods, never its maps.
//
//   - sessionTable (sessiontable.go): sessions by instance, by service
//     and by owner slot, free slots, departed sessions, sessions awaiting
//     resync, sessions that have not applied their first snapshot.
//   - catalog (catalog.go): service records (dependencies), static edges
//     declared and learned, indexed both ways (a session's routing scope
//     is its service's callees), default routes.
//   - routingPublisher (routing.go): the routing revision, which services
//     are published in update mode, what changed since its last round
//     (the dirty set: services, edges added and removed, sessions owed a
//     snapshot), and the goroutine that builds each session's scoped
//     snapshot or delta (from the catalog and the session table, off the
//     event lock) and offers it to the stream's routing slot (stream.go:
//     one pending message, newer ones merged in).
//   - updateTable (updatetable.go): the unfinished update of each service,
//     the updates kept in history, the pins restored for those mid-update.
//     The orchestrator (update.go, failover.go, hold.go; canary.go for
//     canary steps, their controls and analysis) drives them
//     through strategy.Strategy; it has no state of its own beyond the
//     updates' and runs under the event lock, because switching is atomic
//     with event application (DESIGN.md §4.2).
//   - phaseWriter (phasewriter.go): update phases on their way to etcd and
//     back, with its own goroutine.
//   - pinCommitter (pins.go): first-use pins group-committed to etcd
//     before the call decisions that rely on them are sent, with its own
//     goroutine.
//   - analysisStore (canary_store.go): the canaries' analysis windows
//     written behind, so that a new leader continues them, with its own
//     goroutine (asleep while no outcome is counted).
//   - selfPreservation (selfpreserve.go, selfpreserve_store.go): the mass
//     expiry window, the expired sessions kept, the mode and its store
//     (own goroutine).
//   - forgetState (forget.go): what has been unused since when; its sweep
//     asks every serviceUser what is in use.
//   - admission (quota.go): the sessions' quotas; the usage is kept in
//     each session and changed under the event lock. A session over its
//     event rate, or in debt on its budget of rejected events
//     (rejectbudget.go), is not read for a while, or has its stream
//     closed (ratehold.go: the stream's handler decides, with what the
//     event lock noted in the session). The checks that read the graph
//     (live transactions, new services, versions and edges) stay with
//     event application.
//   - laneTable (lanes.go, admin_lanes.go): the lanes by name (DESIGN.md
//     §4.9). Event application never reads it; the routing publisher
//     does (under its leaf mu) to send the lanes whole, and the lane
//     settle goroutine deletes a lane whose promotion is DONE.
//
// The admin views (admin.go, admin_updates.go, admin_services.go: the
// services view; admin_dryrun.go: what an update would do) own nothing: they
// copy what they answer from the components above under the event lock, in
// at most one pass over the live transactions, and build or sort the rest
// after unlocking where they can.
//
// # Locks
//
// The event lock (Coordinator.mu) is taken by event application (the
// applier; a stream's handler itself only before Start and while
// stopping), the progress check, registrations' and restore's apply
// steps, expiries and admin reads of the graph. It is never held across
// an etcd round trip: update phases are stored by the phase writer
// without it and applied after; a registration does its etcd work first,
// then applies it in one locked section, as restore does; the
// self-preservation store writes what it took under mu after releasing
// it. The sweep of transactions awaiting their BEGIN takes it 512 entries
// at a time.
//
// sessionTable, catalog, updateTable and routingPublisher each have their
// own lock, a leaf: every change to their state is made holding the event
// lock and then their lock, so that event application reads them under the
// event lock alone while readers that must not stall it (the routing
// publisher, metrics, admin lists) take only the component's lock.
//
// Allowed orders (a lock may be taken only after those before it):
//
//	regLocks key ("instance/" before "service/")  or  sp.store.mu
//	  or  laneTable.wmu (a lane change: checks, etcd write, apply)
//	  → mu (event lock)
//	    → sessionTable.mu | catalog.mu | updateTable.mu | routingPublisher.mu
//	      | laneTable.mu
//	      | the leases' lock (storage.Leases) | phaseWriter.mu
//
// stream.sendMu and pinCommitter.mu are taken with none of these held:
// decisions, acks and routing are sent after unlocking
// (unlockAndSend) or from the routing publisher's goroutine. stream.wireMu
// (around each Send on the wire, by the stream's handler or, for a
// heartbeat's answer, its receiver) is taken with no lock held at all.
//
// # Errors
//
// Domain code returns sentinel errors (ErrUnknownService,
// ErrUpdateInProgress, ErrInvalidArgument, ErrUnavailable, ..., and those of
// packages graph and storage) wrapped with %w in a message that names what
// was wrong, and never builds a gRPC status. The gRPC edge (edge.go: the
// AdminService methods; the sidecar stream's Connect; each event error of an
// Ack) turns them into statuses once, with toGRPCError and its table of
// sentinels and codes. errors.go documents the sentinels, the table and what
// an error no sentinel matches becomes.
package coordinator
