package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// The two modes alternate ABBA, as many slices of each: a drift in time
// weighs on both alike.
func TestSliceOrder(t *testing.T) {
	for n, want := range map[int]string{1: "DU", 2: "DUUD", 4: "DUUDDUUD", 8: "DUUDDUUDDUUDDUUD"} {
		var got strings.Builder
		var pos [2]int // sum of the positions of each mode's slices
		for i, d := range sliceOrder(n) {
			if d {
				got.WriteByte('D')
				pos[0] += i
			} else {
				got.WriteByte('U')
				pos[1] += i
			}
		}
		if got.String() != want {
			t.Errorf("sliceOrder(%d) = %s, want %s", n, got.String(), want)
		}
		if n%2 == 0 && pos[0] != pos[1] {
			t.Errorf("sliceOrder(%d): the modes' mean positions differ (%v): a linear drift would favour one", n, pos)
		}
	}
}

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
