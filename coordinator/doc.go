// Package coordinator owns the live state of a coordinator replica: the
// dependency-graph engine (package graph) behind one mutex, the sidecar
// sessions and their leases, the application of sidecar events in stream
// order, the write-behind of transaction records to etcd, the restore of that
// state after a restart, and the gRPC services for sidecars and operators.
//
// Everything that touches etcd goes through package storage; the engine itself
// does no I/O. Package coordinator/server wires these services to listeners.
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
