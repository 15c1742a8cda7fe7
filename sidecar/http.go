package sidecar

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"sync"
)

// Headers (and gRPC metadata keys) that carry a transaction.
//
// Only the mesh's own headers, HeaderTxn and HeaderSub, make an inbound call
// join a transaction (HeaderLane, lane.go, carries its lane snapshot); an upstream SDK (or a sidecar proxy speaking this
// protocol) sets both on every outbound call. The tracing headers
// (traceparent, B3, x-request-id) come from anywhere, outside the mesh
// too: they are kept as Txn.Correlation and passed on, but never name the
// transaction (DESIGN.md §1). An entry point strips the mesh headers from
// what it receives (see StripMeshHeaders).
const (
	// HeaderTxn is the transaction's id (the root's): 1 to 256 printable
	// ASCII characters.
	HeaderTxn = "x-coordinator-txn"
	// HeaderSub is the id of the sub-transaction the caller created, in 16
	// lower-case hex digits (not zero).
	HeaderSub = "x-coordinator-sub"
	// HeaderTraceparent is W3C Trace Context: 00-<trace id>-<span id>-<flags>.
	HeaderTraceparent = "traceparent"
	// HeaderB3TraceID and HeaderB3SpanID are Zipkin B3.
	HeaderB3TraceID = "x-b3-traceid"
	HeaderB3SpanID  = "x-b3-spanid"
	// HeaderRequestID is a request id set by a proxy or a client.
	HeaderRequestID = "x-request-id"
)

// meshHeaders are the headers an entry point strips.
var meshHeaders = []string{HeaderTxn, HeaderSub, HeaderLane}

// The headers above in the canonical form http.Header keys them by.
var (
	canonTxn         = textproto.CanonicalMIMEHeaderKey(HeaderTxn)
	canonSub         = textproto.CanonicalMIMEHeaderKey(HeaderSub)
	canonTraceparent = textproto.CanonicalMIMEHeaderKey(HeaderTraceparent)
	canonB3TraceID   = textproto.CanonicalMIMEHeaderKey(HeaderB3TraceID)
	canonB3SpanID    = textproto.CanonicalMIMEHeaderKey(HeaderB3SpanID)
	canonRequestID   = textproto.CanonicalMIMEHeaderKey(HeaderRequestID)
	canonLane        = textproto.CanonicalMIMEHeaderKey(HeaderLane)
)

// canonicalKey is name as http.Header keys it. Header.Get and Header.Set
// canonicalize a lower-case name, allocating, on every call: the SDK's own
// headers, read and set on every request, have theirs made once.
func canonicalKey(name string) string {
	switch name {
	case HeaderTxn:
		return canonTxn
	case HeaderSub:
		return canonSub
	case HeaderTraceparent:
		return canonTraceparent
	case HeaderB3TraceID:
		return canonB3TraceID
	case HeaderB3SpanID:
		return canonB3SpanID
	case HeaderRequestID:
		return canonRequestID
	case HeaderLane:
		return canonLane
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}

// httpHeader is an http.Header read and written as Header.Get and
// Header.Set do, by lower-case names (see canonicalKey).
type httpHeader http.Header

func (h httpHeader) get(name string) string {
	if v := h[canonicalKey(name)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (h httpHeader) set(name, value string) { h[canonicalKey(name)] = []string{value} }

// carriers are the tracing headers a transaction came in by, to carry on.
type carriers uint8

const (
	carryTraceparent carriers = 1 << iota
	carryB3
	carryRequestID
)

// maxTxnID is the longest transaction id HeaderTxn may carry
// (coordinator.MaxTxnIDLen, not imported: it would pull the server into
// every service).
const maxTxnID = 256

// fromHeaders reads an inbound call's headers (get returns the first value
// of a lower-case name). joined is true when the mesh headers name a
// transaction (HeaderTxn) and the sub-transaction the caller created
// (HeaderSub): the call joins it. Otherwise the call is an entry and t has
// no ID. Either way t carries the correlation of the tracing headers: the
// trace id of a valid traceparent, else of B3, else x-request-id.
func fromHeaders(get func(string) string) (t Txn, joined bool) {
	t.flags = "01"
	tp, b3, rid := get(HeaderTraceparent), get(HeaderB3TraceID), get(HeaderRequestID)
	if len(tp) >= 55 && tp[2] == '-' && tp[35] == '-' && tp[52] == '-' &&
		tp[:2] != "ff" && isHex(tp[:2]) && isTraceID(tp[3:35]) && isHex(tp[53:55]) {
		t.trace, t.flags, t.carry = tp[3:35], tp[53:55], carryTraceparent
	}
	if (len(b3) == 16 || len(b3) == 32) && isHex(b3) && b3 != "0000000000000000" && b3 != "00000000000000000000000000000000" {
		if t.trace == "" {
			t.trace = b3
		}
		if b3 == t.trace {
			t.carry |= carryB3
		}
	}
	if isPrintable(rid, maxTxnID) {
		t.requestID = rid
		t.carry |= carryRequestID
	}
	t.Correlation = t.trace
	if t.Correlation == "" {
		t.Correlation = t.requestID
	}
	id, sub := get(HeaderTxn), parseSpan(get(HeaderSub))
	if !isPrintable(id, maxTxnID) || sub == 0 {
		return t, false
	}
	t.ID, t.Sub = id, sub
	if t.trace == id && t.carry&carryTraceparent != 0 && t.carry&carryB3 == 0 {
		// The traceparent an upstream SDK set for a transaction no outside
		// trace started: nothing to correlate with, and it goes on as such.
		t.trace, t.carry = "", t.carry&^carryTraceparent
		t.Correlation = t.requestID
	}
	return t, true
}

// propagate sets the headers that carry the call to its callee: the mesh
// headers always (the transaction and the new sub-transaction); the
// tracing headers the transaction came in by, continuing the outside trace
// with the new span; and traceparent naming the transaction when nothing
// outside started a trace (a root begun here is the trace's root too).
func (call Call) propagate(set func(key, value string)) {
	span := strconv.FormatUint(call.Sub, 16)
	span = "0000000000000000"[len(span):] + span
	set(HeaderTxn, call.TxnID)
	set(HeaderSub, span)
	tx := call.txn
	if tx.lane != nil {
		set(HeaderLane, tx.lane.header)
	}
	trace := tx.trace
	if trace == "" {
		trace = call.TxnID
	}
	if isTraceID(trace) && (tx.carry&carryTraceparent != 0 || tx.trace == "") {
		set(HeaderTraceparent, "00-"+trace+"-"+span+"-"+tx.flags)
	}
	if tx.carry&carryB3 != 0 {
		set(HeaderB3TraceID, trace)
		set(HeaderB3SpanID, span)
	}
	if tx.carry&carryRequestID != 0 {
		set(HeaderRequestID, tx.requestID)
	}
}

// SetHeaders sets on an outbound request (through set, e.g. Header.Set)
// the headers Transport sets: the mesh headers naming the transaction and
// the callee's sub-transaction, and the tracing headers. For a proxy that
// sends the call itself (coordsidecar's istio mode) rather than through
// Transport.
func (call Call) SetHeaders(set func(key, value string)) { call.propagate(set) }

// isPrintable reports whether s is 1 to max printable ASCII characters
// (no space).
func isPrintable(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
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

// InboundOption adjusts Middleware and the server interceptors.
type InboundOption func(*inboundConfig)

type inboundConfig struct{ strip bool }

// StripMeshHeaders(true) removes the mesh headers (HeaderTxn, HeaderSub,
// HeaderLane)
// from every inbound request before anything reads them, so that every
// request runs as a new root transaction, whatever it claims: for a
// listener that takes requests from outside the mesh, where anyone can set
// any header. It is the default for a client whose Config.EntryPoint is
// set; StripMeshHeaders(false) turns it off (a listener of an entry point
// that also serves calls from inside the mesh).
func StripMeshHeaders(strip bool) InboundOption {
	return func(c *inboundConfig) { c.strip = strip }
}

func (c *Client) inboundConfig(opts []InboundOption) inboundConfig {
	ic := inboundConfig{strip: c.cfg.EntryPoint}
	for _, o := range opts {
		o(&ic)
	}
	return ic
}

// inbound returns ctx carrying the transaction of an inbound call: the one
// its mesh headers name, joined; else a new root begun here, which end
// ends. The tracing headers of either are kept as its correlation.
func (c *Client) inbound(ctx context.Context, get func(string) string) (_ context.Context, end func()) {
	t, joined := fromHeaders(get)
	if joined {
		t.c = c
		t.lane = c.inboundLane(get)
		return withTxn(ctx, t), func() {}
	}
	ctx, root := c.begin(ctx, t, get)
	if root.Correlation != "" {
		c.lg.Debug("new root transaction for a request from outside the mesh", "txn", root.ID, "correlation", root.Correlation)
	}
	return ctx, func() { _ = c.End(ctx) }
}

// hasMeshHeader reports whether get has a mesh header.
func hasMeshHeader(get func(string) string) bool {
	for _, h := range meshHeaders {
		if get(h) != "" {
			return true
		}
	}
	return false
}

// Middleware puts the transaction of each inbound request in its context:
// a request whose mesh headers (HeaderTxn, HeaderSub) name a transaction
// joins it as the sub-transaction its caller created; any other request
// is an entry, and runs as a new root transaction, with a fresh id, that
// ends when the handler returns (even by a panic). Tracing headers
// (traceparent, B3, x-request-id) never make a request join: they are kept
// as Txn.Correlation. With StripMeshHeaders (the default for an
// EntryPoint client) every request is an entry.
func Middleware(c *Client, opts ...InboundOption) func(http.Handler) http.Handler {
	ic := c.inboundConfig(opts)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ic.strip && hasMeshHeader(httpHeader(r.Header).get) {
				c.lg.Debug("mesh headers stripped from a request to an entry point", "remote", r.RemoteAddr)
				r = r.Clone(r.Context())
				for _, h := range meshHeaders {
					r.Header.Del(h)
				}
			}
			ctx, end := c.inbound(r.Context(), httpHeader(r.Header).get)
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
	call.propagate(httpHeader(out.Header).set)
	resp, err := t.base.RoundTrip(out)
	if err != nil {
		call.FinishWith(call.HTTPOutcome(0, err))
		return nil, err
	}
	call.FinishWhenClosed(resp)
	return resp, nil
}

// FinishWhenClosed finishes the call (FinishWith) once resp's body is
// closed, with the outcome its status says and the latency to its headers
// (now): a call's RETURN comes once its answer has been read.
func (call Call) FinishWhenClosed(resp *http.Response) {
	o := call.HTTPOutcome(resp.StatusCode, nil)
	resp.Body = &finishBody{ReadCloser: resp.Body, finish: sync.OnceFunc(func() { call.FinishWith(o) })}
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
