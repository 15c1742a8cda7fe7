package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/coordinator/coordinator/coordinator"
)

func TestOverRateCloseAfterFlag(t *testing.T) {
	var stderr bytes.Buffer
	args := []string{"--over-rate-close-after", "0s"}
	if code := run(args, io.Discard, &stderr); code != 2 {
		t.Errorf("%q: exit %d, want 2 (stderr %q)", args, code, stderr.String())
	}
	if got := stderr.String(); !strings.Contains(got, "--over-rate-close-after 0s: want a positive duration") {
		t.Errorf("%q: stderr %q, want the flag named", args, got)
	}

	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	q := registerQuotaFlags(fs)
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{
		{nil, coordinator.DefaultOverRateCloseAfter},
		{[]string{"--over-rate-close-after", "5m"}, 5 * time.Minute},
	} {
		if err := fs.Parse(tc.args); err != nil || q.validate() != nil {
			t.Fatalf("%q: %v %v", tc.args, err, q.validate())
		}
		var c coordinator.Config
		q.apply(&c)
		if c.OverRateCloseAfter != tc.want {
			t.Errorf("%q: OverRateCloseAfter %v, want %v", tc.args, c.OverRateCloseAfter, tc.want)
		}
	}
}

func TestRejectedBudgetFlags(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	q := registerQuotaFlags(fs)
	for _, tc := range []struct {
		args  []string
		rate  float64
		burst int
	}{
		{nil, coordinator.DefaultRejectedPerSecond, coordinator.DefaultRejectedBurst},
		{[]string{"--max-rejected-events-per-second", "50", "--rejected-event-burst", "200"}, 50, 200},
	} {
		if err := fs.Parse(tc.args); err != nil || q.validate() != nil {
			t.Fatalf("%q: %v %v", tc.args, err, q.validate())
		}
		var c coordinator.Config
		q.apply(&c)
		if c.MaxRejectedPerSecond != tc.rate || c.RejectedBurst != tc.burst {
			t.Errorf("%q: budget %v/s burst %d, want %v/s burst %d", tc.args, c.MaxRejectedPerSecond, c.RejectedBurst, tc.rate, tc.burst)
		}
	}
}
