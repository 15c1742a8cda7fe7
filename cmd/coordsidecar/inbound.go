package main

import (
	"context"
	"net/http"
	"net/http/httputil"
	"strconv"

	"github.com/coordinator/coordinator/sidecar"
)

// inboundHandler proxies requests from other services (or from outside
// the mesh) to the application. The SDK's Middleware puts the request in
// its transaction: the one its mesh headers name, or a new root that ends
// when the response is done (always a new root for an entry point, which
// strips the mesh headers). The application gets the mesh headers of that
// transaction, to copy to its outbound calls; everything else passes as it
// came. The request's trace context and lane are kept while it runs (see
// traces, lanes).
func (p *proxy) inboundHandler() http.Handler {
	const leg = "inbound"
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", p.cfg.App
			passThrough(pr)
			if tx, ok := sidecar.FromContext(pr.Out.Context()); ok {
				pr.Out.Header[hdrTxn] = []string{tx.ID}
				pr.Out.Header[hdrSub] = []string{formatSub(tx.Sub)}
				if v := tx.LaneHeader(); v != "" {
					pr.Out.Header[hdrLane] = []string{v}
				}
			}
		},
		Transport:      p.up,
		BufferPool:     p.buffers,
		ModifyResponse: p.met.record(leg, p.cfg.Service),
		ErrorHandler:   p.proxyError(leg, p.cfg.Service),
		ErrorLog:       newLogLogger(p.logAt(leg)),
	}
	keepTrace := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tx, ok := sidecar.FromContext(r.Context()); ok {
			defer p.traces.remember(r.Header, tx)()
			defer p.lanes.remember(tx)()
		}
		rp.ServeHTTP(w, r)
	})
	return p.track(leg, sidecar.Middleware(p.client)(keepTrace))
}

// formatSub writes a sub-transaction id as HeaderSub carries it.
func formatSub(sub uint64) string {
	s := strconv.FormatUint(sub, 16)
	return "0000000000000000"[len(s):] + s
}

// passThrough keeps what ReverseProxy would change of the client's
// request: it puts back the Forwarded and X-Forwarded-* headers that its
// Rewrite mode drops, and has the request's trailer (known only once its
// body is read) sent on (see upstream.RoundTrip).
func passThrough(pr *httputil.ProxyRequest) {
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v, ok := pr.In.Header[h]; ok {
			pr.Out.Header[h] = v
		}
	}
	if len(pr.In.Trailer) > 0 {
		pr.Out = pr.Out.WithContext(context.WithValue(pr.Out.Context(), trailerKey{}, pr.In.Trailer))
	}
}

// trailerKey is the context key of an inbound request's trailer.
type trailerKey struct{}
