package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coordinator/coordinator/mesh/istio"
	"github.com/coordinator/coordinator/sidecar"
)

// Istio mode (--mode istio): the proxy picks no endpoint. Each outbound
// call still goes through the SDK's Route, so the coordinator is told of
// the CALL (freeness, pins) and, while the callee is in update mode, the
// call waits for the coordinator's decision (a BF hold included); then it
// is sent to the callee's Kubernetes service host, where the Istio sidecar
// (Envoy) routes it by the manifests coordctl istio render writes. The
// proxy sets the x-version header (mesh/istio's SERVICE-VERSION) on a call
// when it knows the version the call must run on:
//
//   - the coordinator decided the call (update mode): that version;
//   - else the transaction used the service before through this proxy:
//     the version the callee's x-version response header named then (the
//     seed's rule: once a transaction has used a version of a service, its
//     later requests carry that version);
//   - else none: the call is the transaction's first to the service in
//     steady state, and the VirtualService's default route takes it to the
//     default version, the one the SDK reported in the CALL.
//
// When the x-version of a response differs from the version the CALL
// reported, the mesh did not route as the coordinator decided (manifests
// not applied, or stale): the proxy counts it
// (coordsidecar_istio_version_mismatch_total) and logs it. An x-version
// the application set itself is replaced or removed: the proxy alone
// stamps it.

// pinTTL is how long the proxy remembers the versions a transaction used
// after its last call through this proxy; maxPinned bounds the
// transactions remembered (the oldest generation is dropped first).
const (
	pinTTL    = 10 * time.Minute
	maxPinned = 100_000
)

// pins remembers, per transaction, the version of each service it used
// through this proxy, as the callees' x-version response headers named
// them. Two generations: a lookup in the old one moves the entry to the
// new one; the old one is dropped when the new one is pinTTL old or holds
// maxPinned/2 transactions. The proxy cannot see a joined transaction end,
// so memory is bounded by time and count, not by End.
type pins struct {
	mu       sync.Mutex
	cur, old map[string]map[string]string // txn -> service -> version
	since    time.Time
	now      func() time.Time
}

func newPins() *pins {
	return &pins{cur: map[string]map[string]string{}, old: map[string]map[string]string{}, since: time.Now(), now: time.Now}
}

func (p *pins) rotateLocked() {
	if len(p.cur) >= maxPinned/2 || p.now().Sub(p.since) >= pinTTL {
		p.old, p.cur, p.since = p.cur, map[string]map[string]string{}, p.now()
	}
}

func (p *pins) txnLocked(txn string, create bool) map[string]string {
	p.rotateLocked()
	if m := p.cur[txn]; m != nil {
		return m
	}
	if m := p.old[txn]; m != nil {
		delete(p.old, txn)
		p.cur[txn] = m
		return m
	}
	if !create {
		return nil
	}
	m := map[string]string{}
	p.cur[txn] = m
	return m
}

// get returns the version txn used of service, "" if none is known.
func (p *pins) get(txn, service string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.txnLocked(txn, false)[service]
}

// put remembers that txn used service@version.
func (p *pins) put(txn, service, version string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.txnLocked(txn, true)[service] = version
}

// istioTransport sends a call of a transaction to the mesh (see above).
// With service set (a dependency listener) every call goes to that
// service at host; else (the HTTP proxy) the request's host names the
// service and is where the call goes, and a host that is not a service of
// the mesh gets the request untouched.
type istioTransport struct {
	c        *sidecar.Client
	next     http.RoundTripper
	pins     *pins
	service  string
	host     string
	mismatch prometheus.Counter
	lg       *slog.Logger
}

func (t *istioTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	tx, ok := sidecar.FromContext(ctx)
	if !ok { // Middleware puts every call in a transaction; nothing to stamp otherwise
		return t.next.RoundTrip(req)
	}
	service := t.service
	if service == "" {
		service = req.URL.Hostname()
	}
	call, err := t.c.Route(ctx, service)
	if errors.Is(err, sidecar.ErrUnknownService) && t.service == "" {
		return t.next.RoundTrip(req)
	}
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		if errors.Is(err, sidecar.ErrUnknownService) {
			return nil, fmt.Errorf("%w: %q has no instance registered with the coordinator", errNotInMesh, service)
		}
		return nil, err
	}
	out := req.Clone(ctx)
	if t.service != "" {
		out.URL.Host = t.host
	}
	out.Host = "" // the authority Envoy routes by: the service host
	call.SetHeaders(out.Header.Set)
	stamp := t.pins.get(tx.ID, service)
	if call.Decided {
		if stamp != "" && stamp != call.Version {
			t.lg.Warn("the coordinator decided another version than the transaction used through this proxy; the decision is stamped",
				"txn", tx.ID, "service", service, "decided", call.Version, "used", stamp)
		}
		stamp = call.Version
	}
	out.Header.Del(istio.Header)
	if stamp != "" {
		out.Header.Set(istio.Header, istio.HeaderValue(service, stamp))
	}
	resp, err := t.next.RoundTrip(out)
	if err != nil {
		call.FinishWith(call.HTTPOutcome(0, err))
		return nil, err
	}
	call.FinishWhenClosed(resp) // the latency to the answer's headers
	if got, ok := istio.ParseHeader(service, resp.Header.Get(istio.Header)); ok {
		t.pins.put(tx.ID, service, got)
		if got != call.Version {
			t.mismatch.Inc()
			t.lg.Warn("the mesh routed a call to another version than the coordinator's: are the manifests of coordctl istio render applied?",
				"txn", tx.ID, "service", service, "coordinator", call.Version, "mesh", got)
		}
	}
	return resp, nil
}
