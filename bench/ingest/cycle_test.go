package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The lock histograms are read from /metrics and described by the bucket
// bounds of the observations made between two reads.
func TestHistSince(t *testing.T) {
	body := func(a, b, c, inf int) string {
		return fmt.Sprintf(`# HELP coordinator_batch_lock_wait_seconds x
# TYPE coordinator_batch_lock_wait_seconds histogram
coordinator_batch_lock_wait_seconds_bucket{le="1e-05"} %d
coordinator_batch_lock_wait_seconds_bucket{le="0.01"} %d
coordinator_batch_lock_wait_seconds_bucket{le="0.1"} %d
coordinator_batch_lock_wait_seconds_bucket{le="+Inf"} %d
coordinator_batch_lock_wait_seconds_sum 1
coordinator_batch_lock_wait_seconds_count %d
`, a, b, c, inf, inf)
	}
	page := body(10, 10, 10, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(page)) }))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	const name = "coordinator_batch_lock_wait_seconds"
	h0 := scrapeHists(addr)
	page = body(10+50, 10+99, 10+100, 10+100)
	h1 := scrapeHists(addr)
	if got, want := h1[name].since(h0[name]), "n=100 p50 <=10µs p99 <=10ms max <=100ms"; got != want {
		t.Errorf("since = %q, want %q", got, want)
	}
	page = body(60, 109, 110, 111)
	if got, want := scrapeHists(addr)[name].since(h1[name]), "n=1 p50 >100ms p99 >100ms max >100ms"; got != want {
		t.Errorf("since = %q, want %q", got, want)
	}
	if got := h1["absent"].since(nil); got != "(not exposed)" {
		t.Errorf("absent histogram: %q", got)
	}
}
