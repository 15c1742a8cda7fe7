// Package server runs one coordinator replica: it starts (or connects to)
// etcd, the Coordinator, the gRPC listener for sidecars and operators, and
// the HTTP listener for the REST gateway, /health and /metrics; and it shuts
// them down in the order that loses nothing. coordinatord is a thin flag
// parser over it, and tests use it as their server harness.
//
// With Config.TLS both listeners serve TLS from certificate files that are
// re-read as they rotate; with a client CA (Config.TLS.CA) the sidecar
// stream requires a client certificate and carries the identity it names
// (security/identity) in its context. The REST gateway calls the admin
// service through an in-process gRPC server that only it can reach, and
// an optional plaintext listener (Config.HealthAddr) serves probes. See
// transport.go.
package server
