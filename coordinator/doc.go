// Package coordinator owns the live state of a coordinator replica: the
// dependency-graph engine (package graph) behind one mutex, the sidecar
// sessions and their leases, the application of sidecar events in stream
// order, the write-behind of transaction records to etcd, the restore of that
// state after a restart, and the gRPC services for sidecars and operators.
//
// Everything that touches etcd goes through package storage; the engine itself
// does no I/O. Package coordinator/server wires these services to listeners.
package coordinator
