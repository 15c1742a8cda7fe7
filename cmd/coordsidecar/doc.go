// Command coordsidecar is a sidecar proxy that lets a service in any
// language take part in the coordinator's version-consistent updates
// without linking the Go SDK. One coordsidecar runs beside one instance of
// a service; it owns that instance's session with the coordinator and
// every request that enters or leaves the instance.
//
//   - Inbound: a reverse proxy from --listen to the application at --app.
//     Other services reach the instance at --listen (registered as its
//     address, or --advertise).
//   - Outbound: one local listener per dependency (--dep auth=127.0.0.1:7001:
//     whatever arrives there goes to service auth), and optionally an HTTP
//     proxy (--http-proxy, for HTTP/1.1 clients that honour HTTP_PROXY: the
//     request's host names the service; a host that is not a service of the
//     mesh is passed through untouched).
//
// Every listener serves HTTP/1.1 and cleartext HTTP/2 (h2c, prior knowledge:
// what gRPC speaks) on one port, and each leg speaks to its upstream the
// protocol its client spoke, so gRPC (unary and streaming alike), h2c and
// HTTP/1.1 pass through. Headers, trailers and bodies pass untouched, except
// the hop-by-hop headers (as any proxy) and the mesh's own headers.
//
// # The application must copy the mesh headers
//
// As with Istio, the proxy cannot see which inbound request an outbound call
// is made for: the application must copy the mesh headers,
// x-coordinator-txn and x-coordinator-sub, from each inbound request to
// every outbound call it makes while serving it (and, for one trace, the
// tracing headers traceparent, x-b3-* and x-request-id, as Istio asks).
// Inbound, the proxy joins the transaction the mesh headers name, or starts
// a new root transaction (an outside traceparent, B3 or x-request-id is kept
// as correlation only and never joins one), and hands the application the
// mesh headers of the transaction it runs in. Outbound, a call that carries
// them runs in that transaction; a call without them starts a root of its
// own, so a forgotten copy loses consistency across the calls of one
// request but never fails a call. A call with the mesh headers but no trace
// context gets the one its inbound request came with (W3C traceparent and
// tracestate, B3 multi or single header, read and written with
// OpenTelemetry's propagators), so the trace goes on through an application
// that copies only the mesh headers.
//
// # The "done" hint
//
// An application may say, on an outbound call, that the request it serves
// will not call some services again once this call returns: the header
// x-coordinator-done: auth[, other...] (the SDK's sidecar.Done). The proxy
// takes the header off the call and, once the call has returned, tells the
// coordinator, so that those services become free sooner (DESIGN.md §2):
// without hints a service is free only when no live transaction has used
// it, which under steady load may never be, and WF and BF updates then wait
// for their timeout. examples/polyglot sends it.
//
// Routing and reporting are the Go SDK's (package sidecar): the session,
// batching, reconnects and leader redirects of sidecar.Client, the inbound
// side of sidecar.Middleware, and sidecar.Transport, which sends each call
// to an endpoint of the version the coordinator decides.
//
// The admin listener (--admin) serves /healthz and /metrics (Prometheus),
// and with --pprof net/http/pprof's /debug/pprof/ (for profiling).
// On SIGTERM or SIGINT coordsidecar stops accepting, lets in-flight requests
// finish within --grace, ends the roots it began and deregisters.
//
// Its Go runtime is set for a sidecar: --procs (default 1, GOMAXPROCS)
// threads run it at once, as Envoy's --concurrency, and the collector runs
// when the heap has grown by --gc-percent (default 200, GOGC) rather than
// Go's 100: its live heap is a few MB, so the default collects several
// times a second under load, and each collection delays the requests that
// arrive during it.
//
// --mode direct (the default) is the above: the proxy picks endpoints.
// --mode istio leaves them to Istio: each call is still reported (and, in
// update mode, decided) by the coordinator, then sent to the dependency's
// Kubernetes service host (--dep-host SERVICE=HOST:PORT, default
// SERVICE:80) with the x-version header once its version is known; see
// istio.go and docs/istio.md. It was checked against Istio's API types and
// documented semantics, not on a live mesh.
//
// # Limits
//
// h2c is spoken with prior knowledge only (no HTTP/1.1 Upgrade: h2c, which
// RFC 9113 deprecates). Protocol upgrades (WebSocket) and CONNECT are not
// supported on the outbound legs. Headers are limited to 64 KiB, HTTP/2
// streams to 1,000 per connection, an idle connection lives 2 minutes, and a
// request's headers must arrive within 10 seconds; requests and streams
// themselves have no time limit (a stream may last), except the grace
// period at shutdown.
package main
