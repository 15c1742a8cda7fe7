// Package integration holds end-to-end tests: a real coordinator on a real
// embedded etcd, real gRPC streams from simulated sidecars, the REST gateway,
// and the coordinatord and coordctl binaries.
package integration
