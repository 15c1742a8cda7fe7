package sidecar

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
)

// Headers (and gRPC metadata keys) that carry a transaction.
const (
	// HeaderTraceparent is W3C Trace Context: 00-<trace id>-<span id>-<flags>;
	// the trace id names the transaction, the span id the sub-transaction.
	HeaderTraceparent = "traceparent"
	// HeaderB3TraceID and HeaderB3SpanID are Zipkin B3.
	HeaderB3TraceID = "x-b3-traceid"
	HeaderB3SpanID  = "x-b3-spanid"
	// HeaderRequestID names the transaction by any printable id.
	HeaderRequestID = "x-request-id"
	// HeaderSub is the sub-transaction's id in 16 hex digits; always set on
	// outbound calls, it wins over the span id of traceparent or B3 (a
	// tracing proxy may rewrite those).
	HeaderSub = "x-coordinator-sub"
)

// carriers are the optional headers a transaction came in by.
type carriers uint8

const (
	carryB3 carriers = 1 << iota
	carryRequestID
)

// fromHeaders returns the transaction an inbound call joins, from its
// headers (get returns the first value of a lower-case name): a valid
// traceparent, else B3, else x-request-id names it; the sub-transaction is
// x-coordinator-sub, else the span id of traceparent or B3. ok is false
// when there is no transaction or no sub-transaction: the call is an entry.
func fromHeaders(get func(string) string) (t Txn, ok bool) {
	tp, b3, rid := get(HeaderTraceparent), get(HeaderB3TraceID), get(HeaderRequestID)
	switch {
	case len(tp) >= 55 && tp[2] == '-' && tp[35] == '-' && tp[52] == '-' &&
		tp[:2] != "ff" && isHex(tp[:2]) && isTraceID(tp[3:35]) && isHex(tp[53:55]):
		t = Txn{ID: tp[3:35], Sub: parseSpan(tp[36:52]), flags: tp[53:55]}
	case (len(b3) == 16 || len(b3) == 32) && isHex(b3):
		t = Txn{ID: b3, Sub: parseSpan(get(HeaderB3SpanID)), flags: "01"}
	case rid != "":
		t = Txn{ID: rid, flags: "01"}
	default:
		return Txn{}, false
	}
	if sub := parseSpan(get(HeaderSub)); sub != 0 {
		t.Sub = sub
	}
	if b3 == t.ID {
		t.carry |= carryB3
	}
	if rid == t.ID {
		t.carry |= carryRequestID
	}
	return t, t.Sub != 0
}

// propagate sets the headers that carry the call to its callee: the
// sub-transaction always, traceparent when the transaction id is a W3C
// trace id, B3 and x-request-id when the transaction came in by them (or
// x-request-id when nothing else can carry the id).
func (call Call) propagate(set func(key, value string)) {
	span := strconv.FormatUint(call.Sub, 16)
	span = "0000000000000000"[len(span):] + span
	set(HeaderSub, span)
	w3c := isTraceID(call.TxnID)
	if w3c {
		set(HeaderTraceparent, "00-"+call.TxnID+"-"+span+"-"+call.txn.flags)
	}
	b3 := call.txn.carry&carryB3 != 0
	if b3 {
		set(HeaderB3TraceID, call.TxnID)
		set(HeaderB3SpanID, span)
	}
	if call.txn.carry&carryRequestID != 0 || (!w3c && !b3) {
		set(HeaderRequestID, call.TxnID)
	}
}

// parseSpan parses 16 lower-case hex digits; 0 means invalid.
func parseSpan(s string) uint64 {
	if len(s) != 16 || !isHex(s) {
		return 0
	}
	v, _ := strconv.ParseUint(s, 16, 64)
	return v
}

// isTraceID reports whether s is a valid W3C trace id: 32 lower-case hex
// digits, not all zero.
func isTraceID(s string) bool {
	return len(s) == 32 && isHex(s) && s != "00000000000000000000000000000000"
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// inbound returns ctx carrying the transaction of an inbound call: the one
// its headers name, joined; else a new root begun here, which end ends.
func (c *Client) inbound(ctx context.Context, get func(string) string) (_ context.Context, end func()) {
	if t, ok := fromHeaders(get); ok {
		t.c = c
		return withTxn(ctx, t), func() {}
	}
	ctx, _ = c.Begin(ctx)
	return ctx, func() { _ = c.End(ctx) }
}

// Middleware puts the transaction of each inbound request in its context:
// a request with propagation headers joins the transaction they name as the
// sub-transaction its caller created; any other request is an entry, and
// runs as a new root transaction that ends when the handler returns (even
// by a panic).
func Middleware(c *Client) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, end := c.inbound(r.Context(), r.Header.Get)
			defer end()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// Transport returns a RoundTripper (over base, http.DefaultTransport if
// nil) that routes requests of a transaction: the URL's host name (port
// ignored) names the service; the request goes to an endpoint chosen by
// Client.Route, carrying the transaction in its headers, and the call is
// finished when the response body is closed (or the request fails). The
// Host header keeps the service name. Requests without a transaction in
// their context, and requests to hosts that are not services the
// coordinator knows (external APIs), go out untouched.
func Transport(c *Client, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{c: c, base: base}
}

type transport struct {
	c    *Client
	base http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if _, ok := FromContext(req.Context()); !ok {
		return t.base.RoundTrip(req)
	}
	call, err := t.c.Route(req.Context(), req.URL.Hostname())
	if errors.Is(err, ErrUnknownService) {
		return t.base.RoundTrip(req)
	}
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close() // a RoundTripper always closes the body
		}
		return nil, err
	}
	out := req.Clone(req.Context())
	out.URL.Host = call.Address
	if out.Host == "" {
		out.Host = req.URL.Host
	}
	call.propagate(out.Header.Set)
	resp, err := t.base.RoundTrip(out)
	if err != nil {
		call.Finish()
		return nil, err
	}
	resp.Body = &finishBody{ReadCloser: resp.Body, finish: sync.OnceFunc(call.Finish)}
	return resp, nil
}

// finishBody finishes the call when the response body is closed.
type finishBody struct {
	io.ReadCloser
	finish func()
}

func (b *finishBody) Close() error {
	err := b.ReadCloser.Close()
	b.finish()
	return err
}
