package sidecar

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Headers that carry the transaction.
const (
	HeaderTraceparent = "traceparent"
	HeaderB3Trace     = "x-b3-traceid"
	HeaderB3Span      = "x-b3-spanid"
	HeaderRequestID   = "x-request-id"
	HeaderSub         = "x-coordinator-sub"
)

// fromHeaders reads the transaction id of an inbound request (x-request-id,
// else the trace id of W3C traceparent, else x-b3-traceid) and the
// sub-transaction its caller created for it (x-coordinator-sub, set by
// Transport). A request with no sub comes from outside: it is an entry, and
// its trace id, if any, names the new transaction.
func fromHeaders(h http.Header) (txn string, sub uint64) {
	switch {
	case h.Get(HeaderRequestID) != "":
		txn = h.Get(HeaderRequestID)
	case h.Get(HeaderTraceparent) != "":
		if parts := strings.Split(h.Get(HeaderTraceparent), "-"); len(parts) == 4 && len(parts[1]) == 32 {
			txn = parts[1]
		}
	case h.Get(HeaderB3Trace) != "":
		txn = h.Get(HeaderB3Trace)
	}
	if s, err := strconv.ParseUint(h.Get(HeaderSub), 16, 64); err == nil && txn != "" {
		sub = s
	}
	return txn, sub
}

// Middleware joins the transaction of an inbound request, or begins one at
// the entry (and ends it when the handler returns, even on panic).
func Middleware(c *Client) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			txn, sub := fromHeaders(r.Header)
			if sub != 0 {
				next.ServeHTTP(w, r.WithContext(c.Join(r.Context(), txn, sub)))
				return
			}
			ctx, t := c.BeginWith(r.Context(), txn)
			defer c.End(t)
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// Transport routes outbound requests: the URL's host names the service;
// the request goes to an endpoint of the version chosen by Route, carrying
// the transaction (traceparent, x-request-id and x-coordinator-sub). A
// request whose context has no transaction passes through untouched.
func Transport(c *Client, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return roundTripper{c: c, base: base}
}

type roundTripper struct {
	c    *Client
	base http.RoundTripper
}

func (rt roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	if _, ok := FromContext(req.Context()); !ok {
		return rt.base.RoundTrip(req)
	}
	call, err := rt.c.Route(req.Context(), req.URL.Hostname())
	if err != nil {
		return nil, err
	}
	out := req.Clone(req.Context())
	out.URL.Host = call.Address
	out.Host = call.Address
	out.Header.Set(HeaderTraceparent, fmt.Sprintf("00-%s-%016x-01", traceHex(call.Txn), call.Sub))
	out.Header.Set(HeaderRequestID, call.Txn)
	out.Header.Set(HeaderSub, fmt.Sprintf("%016x", call.Sub))
	resp, err := rt.base.RoundTrip(out)
	if err != nil {
		call.Finish()
		return nil, err
	}
	resp.Body = &finishBody{ReadCloser: resp.Body, call: call}
	return resp, nil
}

// traceHex makes a 32-hex trace id for traceparent from any transaction id;
// x-request-id carries the exact id, which wins when it differs.
func traceHex(id string) string {
	if len(id) == 32 {
		if _, err := strconv.ParseUint(id[:16], 16, 64); err == nil {
			return id
		}
	}
	return fmt.Sprintf("%032x", 0)
}

// finishBody reports the call's return when the body is closed.
type finishBody struct {
	io.ReadCloser
	call Call
	done bool
}

func (b *finishBody) Close() error {
	err := b.ReadCloser.Close()
	if !b.done {
		b.done = true
		b.call.Finish()
	}
	return err
}
