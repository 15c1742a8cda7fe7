package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strings"

	"github.com/coordinator/coordinator/sidecar"
)

// errNotInMesh is a call to a dependency listener whose service the
// coordinator does not know (never registered).
var errNotInMesh = errors.New("not a service of the mesh")

// outboundHandler proxies the application's calls to service, arriving on
// that dependency's own listener. Middleware (with the mesh headers
// trusted: the application is local) puts each call in the transaction its
// mesh headers name, or a root of its own if it has none; the SDK's
// Transport then routes it to an endpoint of the version the coordinator
// decides, reports the call and its return, and sets the mesh and tracing
// headers for the callee.
func (p *proxy) outboundHandler(service string) http.Handler {
	const leg = "outbound"
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The host names the service; Transport replaces it with the
			// endpoint. The Host header stays the application's.
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", service
			passThrough(pr)
		},
		Transport:      p.outboundTransport(service),
		BufferPool:     p.buffers,
		ModifyResponse: p.met.record(leg, service),
		ErrorHandler:   p.proxyError(leg, service),
		ErrorLog:       newLogLogger(p.logAt(leg)),
	}
	return p.track(leg, p.restoreTrace(sidecar.Middleware(p.client, sidecar.StripMeshHeaders(false))(doneHint(rp))))
}

// headerDone is the "done" hint of an application that cannot call the
// SDK's sidecar.Done: on an outbound call, the services (comma-separated)
// that the sub-transaction the call is made for will not call again once
// it returns. The proxy removes it from the call and, when the call has
// returned, tells the coordinator (DESIGN.md §2), so that those services
// may become free, and WF and BF updates of them switch, sooner.
const headerDone = "x-coordinator-done"

// hdrDone is headerDone in its canonical form (see hdrTxn).
var hdrDone = textproto.CanonicalMIMEHeaderKey(headerDone)

// maxDoneHints bounds the services one call may name in headerDone.
const maxDoneHints = 16

// doneHint takes headerDone off a call and, once the call has returned,
// sends its hints in the call's transaction (set by the Middleware
// around it).
func doneHint(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vals := r.Header[hdrDone]
		if len(vals) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		delete(r.Header, hdrDone)
		next.ServeHTTP(w, r)
		n := 0
		for _, v := range vals {
			for _, s := range strings.Split(v, ",") {
				if s = strings.TrimSpace(s); s != "" && n < maxDoneHints {
					sidecar.Done(r.Context(), s)
					n++
				}
			}
		}
	})
}

// outboundTransport sends the calls of a dependency listener (service) or
// of the HTTP proxy (""): in direct mode the SDK's Transport routes each
// to an endpoint; in istio mode istioTransport sends it to the service's
// host, stamped with its version.
func (p *proxy) outboundTransport(service string) http.RoundTripper {
	if p.cfg.Mode == modeIstio {
		t := &istioTransport{c: p.client, next: p.up, pins: p.pins, service: service,
			mismatch: p.met.mismatch, lg: p.lg.With("leg", "outbound", "mode", modeIstio)}
		if service != "" {
			t.host = p.cfg.dependencyHost(service)
		}
		return t
	}
	if service == "" {
		return sidecar.Transport(p.client, p.up)
	}
	return sidecar.Transport(p.client, meshOnly{service: service, next: p.up})
}

// restoreTrace gives a call without a trace context, or without a lane
// header, the one of the inbound request it is made for (see traces,
// lanes).
func (p *proxy) restoreTrace(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, p.lanes.restore(p.traces.restore(r)))
	})
}

// meshOnly refuses what sidecar.Transport passes through unrouted (the
// URL still names the service rather than an endpoint): the coordinator
// does not know the service, and a dependency listener must not send its
// calls anywhere else.
type meshOnly struct {
	service string
	next    http.RoundTripper
}

func (m meshOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == m.service {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, fmt.Errorf("%w: %q has no instance registered with the coordinator", errNotInMesh, m.service)
	}
	return m.next.RoundTrip(r)
}

// httpProxyHandler is a forward proxy for HTTP/1.1 clients that honour
// HTTP_PROXY: the request's host names the service it calls. Calls are
// handled as on a dependency listener, except that a host that is not a
// service of the mesh is passed through untouched (as the SDK's Transport
// does), so the application's other HTTP calls keep working.
func (p *proxy) httpProxyHandler() http.Handler {
	const leg, target = "outbound", "http-proxy"
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			passThrough(pr)
		},
		Transport:      p.outboundTransport(""),
		BufferPool:     p.buffers,
		ModifyResponse: p.met.record(leg, target),
		ErrorHandler:   p.proxyError(leg, target),
		ErrorLog:       newLogLogger(p.logAt(leg)),
	}
	inner := p.restoreTrace(sidecar.Middleware(p.client, sidecar.StripMeshHeaders(false))(doneHint(rp)))
	return p.track(leg, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodConnect:
			http.Error(w, "coordsidecar: CONNECT is not supported: send plain HTTP requests to this proxy", http.StatusMethodNotAllowed)
		case r.URL.Host == "" || (r.URL.Scheme != "" && r.URL.Scheme != "http"):
			http.Error(w, "coordsidecar: this is an HTTP proxy: send absolute-form http:// requests", http.StatusBadRequest)
		default:
			inner.ServeHTTP(w, r)
		}
	}))
}
