package main

import (
	"context"
	"net/http"
	"net/textproto"
	"sync"

	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/coordinator/coordinator/sidecar"
)

// traces carries an outside trace across the application, for
// correlation only (it never names a transaction).
//
// The SDK reads traceparent and B3 headers into a transaction's
// correlation and continues them on its calls (sidecar.Middleware,
// sidecar.Transport). Here the application stands between the inbound leg
// and the outbound one: if it copies the tracing headers (or sends its own,
// being traced itself), the outbound leg continues them. If it copies only
// the mesh headers, the trace would end at the application; so the inbound
// leg keeps the trace context each request came with (read with
// OpenTelemetry's W3C and B3 propagators), under the transaction and
// sub-transaction it runs as, while the request runs; and the outbound leg
// gives a call that carries those mesh headers but no trace context of its
// own the one kept, in the formats it came in, before the SDK reads it.
type traces struct {
	mu   sync.Mutex
	live map[traceKey]*traceContext
}

// traceKey is a sub-transaction as the mesh headers name it.
type traceKey struct{ txn, sub string }

// traceContext is a request's trace context and the propagator of the
// formats it came in.
type traceContext struct {
	ctx  context.Context
	prop propagation.TextMapPropagator
}

// The headers read on every request, in their canonical form: http.Header
// looks a key up by it, and canonicalizes (allocating) a key that is not.
var (
	hdrTxn         = textproto.CanonicalMIMEHeaderKey(sidecar.HeaderTxn)
	hdrSub         = textproto.CanonicalMIMEHeaderKey(sidecar.HeaderSub)
	hdrTraceparent = textproto.CanonicalMIMEHeaderKey("traceparent")
	hdrB3TraceID   = textproto.CanonicalMIMEHeaderKey("x-b3-traceid")
	hdrB3          = textproto.CanonicalMIMEHeaderKey("b3")
)

// traceHeaders are the headers of the trace formats read.
var traceHeaders = []string{hdrTraceparent, hdrB3TraceID, hdrB3}

func newTraces() *traces { return &traces{live: map[traceKey]*traceContext{}} }

// remember keeps the trace context of h, if valid, under tx while the
// inbound request runs: call forget when it ends.
func (t *traces) remember(h http.Header, tx sidecar.Txn) (forget func()) {
	var formats []propagation.TextMapPropagator
	if h.Get(hdrTraceparent) != "" {
		formats = append(formats, propagation.TraceContext{}) // with tracestate
	}
	var enc b3.Encoding
	if h.Get(hdrB3TraceID) != "" {
		enc |= b3.B3MultipleHeader
	}
	if h.Get(hdrB3) != "" {
		enc |= b3.B3SingleHeader
	}
	if enc != 0 {
		formats = append(formats, b3.New(b3.WithInjectEncoding(enc)))
	}
	if len(formats) == 0 {
		return func() {}
	}
	prop := propagation.NewCompositeTextMapPropagator(formats...)
	ctx := prop.Extract(context.Background(), propagation.HeaderCarrier(h))
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return func() {}
	}
	k, tc := traceKey{tx.ID, formatSub(tx.Sub)}, &traceContext{ctx: ctx, prop: prop}
	t.mu.Lock()
	t.live[k] = tc
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		if t.live[k] == tc {
			delete(t.live, k)
		}
		t.mu.Unlock()
	}
}

// restore returns r with the trace context kept for the sub-transaction
// its mesh headers name, if it has none of its own.
func (t *traces) restore(r *http.Request) *http.Request {
	k := traceKey{r.Header.Get(hdrTxn), r.Header.Get(hdrSub)}
	if k.txn == "" || k.sub == "" {
		return r
	}
	for _, h := range traceHeaders {
		if r.Header.Get(h) != "" {
			return r
		}
	}
	t.mu.Lock()
	tc := t.live[k]
	t.mu.Unlock()
	if tc == nil {
		return r
	}
	r = r.Clone(r.Context())
	tc.prop.Inject(tc.ctx, propagation.HeaderCarrier(r.Header))
	return r
}
