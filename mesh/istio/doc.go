// Package istio renders, from the coordinator's state of one service, the
// Istio VirtualService and DestinationRule that enforce the routing the
// coordinator applies now: coordsidecar's --mode istio leaves the choice of
// endpoints to the mesh (Envoy) and only stamps the version header, and
// these manifests are what makes the mesh route by it. It is pure: no I/O,
// no Kubernetes, no Istio; the admin service feeds it and serves the result
// (GET /v1/services/{service}/istio, coordctl istio render).
//
// # The header
//
// Header (x-version) carries SERVICE-VERSION, as the seed's rules do
// ("auth-service-v1"): on a request, the version of SERVICE the
// transaction has used (the proxy stamps it); on a response, the version
// that served it (the VirtualService sets it, so the caller learns it). The
// service name in the value keeps a header copied from one call to a call
// to another service from pinning that one.
//
// # What is rendered
//
// The DestinationRule has one subset per version (label version: VERSION):
// every version the coordinator knows of the service (an instance, the
// default, live transactions) and the update's two. The VirtualService, for
// host --host (the service's name by default), has in order:
//
//  1. per version, a route matching x-version exactly SERVICE-VERSION to
//     that version's subset: a transaction that used a version keeps it
//     (DESIGN.md §4: a call with used[S] set goes to that version);
//  2. a last route with no match to the subset of the version the
//     coordinator sends a new transaction's first call to now.
//
// Every route sets the response header x-version to the version it sends
// to. Istio evaluates the routes in order and the first match wins.
//
// # Per phase
//
// With no update running (before one, after DONE, ABORTED or FAILED) the
// default route goes to the service's default version. During an update the
// strategy's own Decide (package strategy) says where a first call goes, and
// where a pinned one goes, at the update's phase:
//
//   - WF, CV before the switch (PREPARING, WAITING): the old version;
//     CV's DRAINING and SWITCHED, WF's SWITCHED: the new one.
//   - BF WAITING holds a new transaction's call until the switch. A hold
//     cannot be written in a VirtualService: the rendered default route is
//     the old version (where a held call goes if the update aborts), and
//     the hold is the coordinator's: a coordsidecar in istio mode sends
//     every call of an update-mode service as a waiting CALL and sends it
//     out only once decided, stamped with the decided version, which the
//     header routes enforce. A client that bypasses the proxy is not held.
//   - A CV update aborted after its switch (rolling back): the old version,
//     with the header route to the new one kept for the transactions
//     pinned there.
//   - NAIVE pins nothing: it renders no header routes while it runs, only
//     the default (the baseline the tests prove the oracle against).
//
// Routing.Held reports the BF hold, so callers can say it.
package istio
