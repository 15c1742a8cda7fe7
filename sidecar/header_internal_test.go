package sidecar

import (
	"net/http"
	"reflect"
	"testing"
)

// httpHeader reads and writes exactly as Header.Get and Header.Set do, for
// the SDK's own headers (canonical keys made once) and any other name.
func TestHTTPHeaderAsHeaderGetSet(t *testing.T) {
	names := []string{HeaderTxn, HeaderSub, HeaderTraceparent, HeaderB3TraceID, HeaderB3SpanID, HeaderRequestID,
		"x-b3-sampled", "Content-Type", "X-Coordinator-Txn"}
	for _, name := range names {
		want, got := http.Header{}, http.Header{}
		want.Set(name, "v1")
		httpHeader(got).set(name, "v1")
		if !reflect.DeepEqual(got, want) {
			t.Errorf("set %q: %v, Header.Set makes %v", name, got, want)
		}
		want.Add(name, "v2")
		if g, w := httpHeader(want).get(name), want.Get(name); g != w || g != "v1" {
			t.Errorf("get %q: %q, Header.Get says %q", name, g, w)
		}
		if g := httpHeader(http.Header{}).get(name); g != "" {
			t.Errorf("get %q of an empty header: %q", name, g)
		}
	}
}
