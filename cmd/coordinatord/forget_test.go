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

func TestForgetFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--update-retention", "0"}, "--update-retention must be at least 1, got 0"},
		{[]string{"--update-max-age", "0s"}, "--update-max-age must be positive, got 0s"},
	} {
		var stderr bytes.Buffer
		if code := run(tc.args, io.Discard, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", tc.args, code, stderr.String())
		}
		if got := stderr.String(); !strings.HasPrefix(got, "coordinatord: ") || !strings.Contains(got, tc.want) {
			t.Errorf("%q: stderr %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestForgetFlagsApply(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := registerForgetFlags(fs)
	if err := fs.Parse(nil); err != nil || f.validate() != nil {
		t.Fatalf("defaults: %v %v", err, f.validate())
	}
	var c coordinator.Config
	f.apply(&c)
	if c.ForgetAfter != 10*time.Minute || c.UpdateRetention != 20 || c.UpdateMaxAge != 7*24*time.Hour {
		t.Errorf("defaults applied: %+v", c)
	}
	for _, tc := range []struct {
		args  []string
		after time.Duration
	}{
		{[]string{"--forget-after", "30s", "--update-retention", "5", "--update-max-age", "48h"}, 30 * time.Second},
		{[]string{"--forget-after", "0s", "--update-retention", "5", "--update-max-age", "48h"}, -1},
	} {
		if err := fs.Parse(tc.args); err != nil || f.validate() != nil {
			t.Fatalf("%q: %v %v", tc.args, err, f.validate())
		}
		f.apply(&c)
		if c.ForgetAfter != tc.after || c.UpdateRetention != 5 || c.UpdateMaxAge != 48*time.Hour {
			t.Errorf("%q applied: %+v", tc.args, c)
		}
	}
}
