package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// fitsTerminal fails the test if a line of out is wider than 80 columns.
func fitsTerminal(t *testing.T, what, out string) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if n := utf8.RuneCountInString(l); n > termWidth {
			t.Errorf("%s: a line of %d columns, more than %d:\n%s", what, n, termWidth, l)
		}
	}
}

func TestFitAndWrap(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{{"auth-service", 20, "auth-service"}, {"auth-service", 6, "auth-~"}, {"auth", 0, "auth"}, {"ab", 1, "~"}} {
		if got := fit(tc.s, tc.n); got != tc.want {
			t.Errorf("fit(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
	got := wrap("one two three four", 12, "- ", "  ")
	if want := []string{"- one two", "  three four"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("wrap = %q, want %q", got, want)
	}
	if got := wrap("one two", 0, "- ", "  "); len(got) != 1 || got[0] != "- one two" {
		t.Errorf("wrap with no width = %q", got)
	}
}

// Long names are cut so that the default table fits 80 columns; -o wide
// keeps them whole.
func TestRenderServicesFitsATerminal(t *testing.T) {
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	long := strings.Repeat("x", 60)
	r := &coordinatorv1.ListServicesResponse{Total: 3, Services: []*coordinatorv1.ServiceState{{
		Name: "auth-service-with-a-long-name", DefaultVersion: "2026.12.03-rc1",
		Versions: []*coordinatorv1.VersionState{{Version: "2026.12.03-rc1", Default: true, Instances: 12, LiveTransactions: 1234},
			{Version: "2026.12.04", Instances: 3}},
		Update: &coordinatorv1.Update{Id: "20261203T000000-abcdef01", Phase: coordinatorv1.Phase_PHASE_PREPARING,
			CreatedAt: timestamppb.New(now.Add(-time.Minute))},
		LastUpdate: &coordinatorv1.Update{Id: "20261202T000000-abcdef01", Phase: coordinatorv1.Phase_PHASE_ABORTED,
			FinishedAt: timestamppb.New(now.Add(-59 * time.Minute))},
	}, {Name: long, DefaultVersion: long, Free: true}}}
	var out bytes.Buffer
	if err := renderServices(&out, r, false, now); err != nil {
		t.Fatal(err)
	}
	fitsTerminal(t, "services", out.String())
	for _, want := range []string{"auth-service-wi~", "PREPARING", "ABORTED 59m ago", "Showing 2 of 3 services"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q in\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := renderServices(&out, r, true, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{long, "2026.12.03-rc1:12/1234 2026.12.04:3/0", "20261203T000000-abcdef01", "ABORTED 59m ago"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("wide: missing %q in\n%s", want, out.String())
		}
	}
	out.Reset()
	_ = renderServices(&out, &coordinatorv1.ListServicesResponse{}, false, now)
	if out.String() != "No services.\n" {
		t.Errorf("no services: %q", out.String())
	}
}

func TestAgo(t *testing.T) {
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{-time.Second: "0s", 40 * time.Second: "40s", 3 * time.Minute: "3m",
		5 * time.Hour: "5h", 72 * time.Hour: "3d"} {
		if got := ago(now.Add(-d), now); got != want {
			t.Errorf("ago(%v) = %q, want %q", d, got, want)
		}
	}
}
