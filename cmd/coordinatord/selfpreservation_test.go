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

func TestSelfPreservationFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--self-preservation-window", "0s"}, "--self-preservation-window must be positive, got 0s"},
		{[]string{"--self-preservation-window", "-1m"}, "--self-preservation-window must be positive, got -1m0s"},
		{[]string{"--self-preservation-ratio", "0"}, "--self-preservation-ratio must be in (0, 1], got 0"},
		{[]string{"--self-preservation-ratio", "1.5"}, "--self-preservation-ratio must be in (0, 1], got 1.5"},
		{[]string{"--self-preservation-ratio", "NaN"}, "--self-preservation-ratio must be in (0, 1], got NaN"},
		{[]string{"--self-preservation-min", "0"}, "--self-preservation-min must be at least 1, got 0"},
		{[]string{"--self-preservation-grace", "-5s"}, "--self-preservation-grace must not be negative"},
	} {
		var stderr bytes.Buffer
		code := run(tc.args, io.Discard, &stderr)
		if code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", tc.args, code, stderr.String())
		}
		if got := stderr.String(); !strings.HasPrefix(got, "coordinatord: ") || !strings.Contains(got, tc.want) {
			t.Errorf("%q: stderr %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestSelfPreservationFlagsApply(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := registerSelfPreservationFlags(fs)
	if err := fs.Parse(nil); err != nil || f.validate() != nil {
		t.Fatalf("defaults: %v %v", err, f.validate())
	}
	var c coordinator.Config
	f.apply(&c)
	if c.SelfPreservationWindow != coordinator.DefaultSelfPreservationWindow || c.SelfPreservationRatio != coordinator.DefaultSelfPreservationRatio ||
		c.SelfPreservationMin != coordinator.DefaultSelfPreservationMin || c.SelfPreservationGrace != 0 {
		t.Errorf("defaults applied: %+v", c)
	}
	args := []string{"--self-preservation-window", "30s", "--self-preservation-ratio", "1",
		"--self-preservation-min", "10", "--self-preservation-grace", "5m"}
	if err := fs.Parse(args); err != nil || f.validate() != nil {
		t.Fatalf("%q: %v %v", args, err, f.validate())
	}
	f.apply(&c)
	if c.SelfPreservationWindow != 30*time.Second || c.SelfPreservationRatio != 1 || c.SelfPreservationMin != 10 || c.SelfPreservationGrace != 5*time.Minute {
		t.Errorf("%q applied: %+v", args, c)
	}
}
