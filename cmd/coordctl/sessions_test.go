package main

import (
	"bytes"
	"testing"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func TestRenderSessions(t *testing.T) {
	var buf bytes.Buffer
	if err := renderSessions(&buf, testSessions()); err != nil {
		t.Fatal(err)
	}
	want := `INSTANCE     SERVICE  VERSION  ADDRESS        TTL   CONNECTED  ROOTS  REGISTERED
orders-7f9c  orders   v2       10.0.0.7:8080  10s   yes        4      2026-01-02T03:04:05Z
audit-1      audit    v1       -              1.5s  no         0      -
`
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestRenderSessionsEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := renderSessions(&buf, &coordinatorv1.ListSessionsResponse{}); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != "No sessions.\n" {
		t.Errorf("got %q", got)
	}
}
