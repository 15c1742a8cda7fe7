// Package server runs one coordinator replica: it starts (or connects to)
// etcd, the Coordinator, the gRPC listener for sidecars and operators, and
// the HTTP listener for the REST gateway, /health and /metrics; and it shuts
// them down in the order that loses nothing. coordinatord is a thin flag
// parser over it, and tests use it as their server harness.
package server
