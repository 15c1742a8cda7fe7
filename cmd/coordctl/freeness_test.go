package main

import (
	"bytes"
	"strings"
	"testing"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func TestRenderFreenessBlocked(t *testing.T) {
	var buf bytes.Buffer
	if err := renderFreeness(&buf, testFreeness()); err != nil {
		t.Fatal(err)
	}
	want := `Service:   orders
Free:      no
Blocking:  3 transactions (showing 2; raise --limit to see more)

TXN  PAST          FUTURE VIA  REASON
t-1  v1 (running)  orders      running in orders@v1
t-2  v1            gateway     used orders@v1, can reach it from gateway
`
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestRenderFreenessFree(t *testing.T) {
	var buf bytes.Buffer
	if err := renderFreeness(&buf, &coordinatorv1.Freeness{Service: "audit", Free: true}); err != nil {
		t.Fatal(err)
	}
	want := "Service:   audit\nFree:      yes\nBlocking:  0 transactions\n"
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestBlockerPast(t *testing.T) {
	for _, tc := range []struct {
		b    *coordinatorv1.Blocker
		want string
	}{
		{&coordinatorv1.Blocker{PastVersion: "v1"}, "v1"},
		{&coordinatorv1.Blocker{PastVersion: "v1", Running: true}, "v1 (running)"},
		{&coordinatorv1.Blocker{Legacy: true}, "(legacy)"},
		{&coordinatorv1.Blocker{PastVersion: "v3", Running: true, Legacy: true}, "v3 (running, legacy)"},
		{&coordinatorv1.Blocker{}, ""},
	} {
		if got := blockerPast(tc.b); got != tc.want {
			t.Errorf("blockerPast(%v) = %q, want %q", tc.b, got, tc.want)
		}
	}
	// An empty past shows as "-" in the table, keeping the columns aligned.
	var buf bytes.Buffer
	f := &coordinatorv1.Freeness{Service: "s", Blocking: 1, Blockers: []*coordinatorv1.Blocker{{TxnId: "t", Legacy: true}}}
	if err := renderFreeness(&buf, f); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "t    (legacy)  -           -\n") {
		t.Errorf("legacy blocker row:\n%s", buf.String())
	}
}

func TestRenderFreenessDuringResync(t *testing.T) {
	var buf bytes.Buffer
	f := &coordinatorv1.Freeness{Service: "auth", ResyncMissing: 3, ResyncSessions: []string{"auth-1", "portal-1"}}
	if err := renderFreeness(&buf, f); err != nil {
		t.Fatal(err)
	}
	want := "Resync:    3 sessions known in etcd not back since the failover: not known free (auth-1, portal-1, ...)\n"
	if !strings.Contains(buf.String(), "Free:      no\n") || !strings.Contains(buf.String(), want) {
		t.Fatalf("got:\n%s\nwant the line %q", buf.String(), want)
	}
}
