// Package sidecar is the Go SDK that services (or a sidecar proxy) use to
// take part in version-consistent updates: a stream client that reports what
// each transaction does to the coordinator in batches, keeps the routing
// table the coordinator pushes, and asks the coordinator where a call goes
// only while the callee is being updated; plus net/http middleware and an
// http.RoundTripper that carry the transaction id and route by version.
//
// In steady state a call costs no round trip: the client routes to the
// default version and queues the event.
package sidecar
