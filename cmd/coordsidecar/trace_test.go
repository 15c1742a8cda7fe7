package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
)

// An application that copies only the mesh headers still keeps the
// outside trace: the outbound leg gives its call the trace context of the
// inbound request it serves (W3C with tracestate, B3 multi or single
// header), and the SDK continues it. An application that sends a trace
// context of its own keeps its own.
func TestTraceContextCarriedAcrossTheApplication(t *testing.T) {
	ts := servertest.Start(t, "")
	var mu sync.Mutex
	var got []http.Header
	startProxy(t, ts, "b", "v1", serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Clone())
		mu.Unlock()
	})), nil)
	var depB string
	a := startProxy(t, ts, "a", "v1", serveApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		extra := http.Header{}
		if own := r.URL.Query().Get("own"); own != "" {
			extra.Set("traceparent", own) // a traced application's own span
		}
		callDep(w, r, depB, extra)
	})), []dependency{{Service: "b", Listen: "127.0.0.1:0"}})
	depB = a.listenerAddr("dep-b")
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	const (
		trace = "4bf92f3577b34da6a3ce929d0e0e4736"
		span  = "00f067aa0ba902b7"
	)
	for _, tc := range []struct {
		name, query string
		in          map[string]string
		check       func(h http.Header) bool
	}{
		{"w3c", "", map[string]string{"traceparent": "00-" + trace + "-" + span + "-01", "tracestate": "vendor=opaque"},
			func(h http.Header) bool {
				tp := h.Get("traceparent")
				return strings.HasPrefix(tp, "00-"+trace+"-") && !strings.Contains(tp, span) && h.Get("tracestate") == "vendor=opaque"
			}},
		{"b3 multi", "", map[string]string{"x-b3-traceid": trace, "x-b3-spanid": span, "x-b3-sampled": "1"},
			func(h http.Header) bool {
				return h.Get("x-b3-traceid") == trace && subRe.MatchString(h.Get("x-b3-spanid")) && h.Get("x-b3-spanid") != span
			}},
		{"b3 single", "", map[string]string{"b3": trace + "-" + span + "-1"},
			func(h http.Header) bool { return h.Get("b3") == trace+"-"+span+"-1" }},
		{"application's own", "?own=00-" + strings.Repeat("ab", 16) + "-" + strings.Repeat("cd", 8) + "-01",
			map[string]string{"traceparent": "00-" + trace + "-" + span + "-01"},
			func(h http.Header) bool {
				return strings.HasPrefix(h.Get("traceparent"), "00-"+strings.Repeat("ab", 16)+"-")
			}},
	} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.listenerAddr("inbound")+"/"+tc.query, nil)
		for k, v := range tc.in {
			req.Header.Set(k, v)
		}
		resp, err := clientFor(1).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		mu.Lock()
		h := got[len(got)-1]
		mu.Unlock()
		if resp.StatusCode != http.StatusOK || !tc.check(h) {
			t.Errorf("%s: %s; b got traceparent %q tracestate %q x-b3-traceid %q x-b3-spanid %q b3 %q", tc.name, resp.Status,
				h.Get("traceparent"), h.Get("tracestate"), h.Get("x-b3-traceid"), h.Get("x-b3-spanid"), h.Get("b3"))
		}
	}
	a.traces.mu.Lock()
	defer a.traces.mu.Unlock()
	if n := len(a.traces.live); n != 0 {
		t.Fatalf("%d trace contexts kept after their requests ended", n)
	}
}
