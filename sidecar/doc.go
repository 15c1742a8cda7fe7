// Package sidecar is the Go SDK of the coordinator: what a service (or a
// sidecar proxy in front of one) links to take part in version-consistent
// live updates.
//
// A Client keeps one bidirectional stream to the coordinator leader
// (Register, then batched events, heartbeats and routing-table acks) and
// reconnects on its own. The transaction API (Begin, End, Route, Done) reports
// what each distributed transaction does; Middleware and Transport do it for
// net/http, UnaryServerInterceptor, StreamServerInterceptor and Client.Conn
// for gRPC. Transactions travel between services in the mesh's own
// headers: x-coordinator-txn (the transaction's id) and x-coordinator-sub
// (the sub-transaction the caller created).
//
// # Trust in inbound headers
//
// Only those mesh headers make an inbound request join a transaction. A
// request without them (from outside the mesh) starts a new root
// transaction with a fresh random id, even when it carries a valid W3C
// traceparent, B3 headers or an x-request-id: anyone can send those, and a
// request that joined a transaction nobody began would, during an update,
// wait for a BEGIN that never comes, run on the old version and keep it
// from draining. Their id is kept as Txn.Correlation (for logs) and carried
// on to callees in the headers it came by, so outside tracing still sees
// one trace.
//
// A service that takes requests from outside the mesh is marked with
// Config.EntryPoint: its Middleware and server interceptors then strip the
// mesh headers from every request, so that an outside client cannot name a
// transaction either. StripMeshHeaders overrides that per listener (off
// for a listener that serves calls from inside the mesh, on for an edge
// listener of a service not marked).
//
// # Lanes
//
// A lane (DESIGN.md §4.9, lane.go) is a named set of service versions that
// a request selects, at its entry, by a header and value the coordinator
// publishes with the routing (x-lane: gray). The root begun for it fixes
// the lane's member map then, and the map travels with the transaction in
// the mesh header x-coordinator-lane: every hop routes a call to a member
// to the lane's version (no round trip, whatever the update phase), and
// other calls as usual. Entry points strip x-coordinator-lane with the
// other mesh headers; a malformed one is ignored and counted
// (Stats.BadLaneHeaders). A lane version with no endpoint fails the call
// (ErrNoLaneEndpoint).
//
// # Cost on the request path
//
// In steady state a call costs no round trip: Route picks an endpoint of the
// callee's default version from the routing table the coordinator pushed
// (an atomic pointer, read without locks), queues the CALL event and
// returns. One goroutine per client sends queued events in batches, at most
// Config.FlushInterval after they were queued. Only while the callee is in
// update mode, or outside this service's routing scope, does Route send its
// CALL at once and wait for the coordinator's CallDecision.
//
// # Routing scope
//
// The routing table holds the services this service may call (its
// declared dependencies and those it has called), not the whole mesh: a
// snapshot after each registration, then deltas. The first call to a
// service outside it is a waiting CALL: the coordinator decides it, adds
// the service to the scope and sends its route, which Route waits for. A
// name the coordinator does not know as a service is ErrUnknownService (the
// HTTP transport sends such a request out untouched, and does not ask
// again for a second).
//
// # Routing acks
//
// A routing snapshot or delta is applied and its RoutingAck queued behind every event
// routed by the table before it, on the same stream: so when the
// coordinator reads the ack of a table that puts a service in update mode,
// it has already applied every call routed to that service without asking.
//
// # Delivery across reconnects
//
// Events are delivered at least once, in order. An event sent on a stream
// that then broke may or may not have been applied; the client cannot tell,
// so after re-registering it sends again, with their sequence numbers, every
// event the old stream did not acknowledge (and the CALL of every call
// still waiting for its decision), then what was queued meanwhile. Dropping
// them instead could lose a CALL, and a coordinator that does not know a
// transaction used a service may switch that service under it: exactly the
// inconsistency the coordinator exists to prevent. Replaying an ordered
// suffix of the stream is safe: an event applied twice is rejected as a
// duplicate (AlreadyExists, NotFound) and changes nothing, or is reported
// late in the Ack (a CALL or RETURN of a sub-transaction that has returned,
// any event of a transaction that has ended) and changes nothing either;
// the replay leaves the coordinator in the state a single delivery would
// have. Such answers to resent events are counted in Stats.Duplicates, not
// Stats.Rejected; other late events in Stats.Late. The Register of the new
// stream lists the roots begun here and not ended, their BEGIN sent or not
// (LiveRoots), so the coordinator can end the roots that ended meanwhile and
// keep the others (a root whose BEGIN it has not seen becomes legacy there:
// pessimistic, never wrong; the BEGIN that follows is a duplicate).
//
// A call waiting for its decision survives a reconnect: its CALL is sent
// again on the new stream, and it waits for the decision there, until its
// context ends.
package sidecar
