package main

import (
	"fmt"
	"math"
	"time"

	"github.com/spf13/pflag"

	"github.com/coordinator/coordinator/coordinator"
)

// selfPreservationFlags configure self-preservation (DESIGN.md §7): when,
// within --self-preservation-window, the leases of at least
// --self-preservation-ratio of the sessions and of at least
// --self-preservation-min of them expire, their expiry is queued and every
// switch is paused until they register again or their grace ends.
type selfPreservationFlags struct {
	window, grace time.Duration
	ratio         float64
	min           int
}

// registerSelfPreservationFlags defines the self-preservation flags on fs.
func registerSelfPreservationFlags(fs *pflag.FlagSet) *selfPreservationFlags {
	f := &selfPreservationFlags{}
	fs.DurationVar(&f.window, "self-preservation-window", coordinator.DefaultSelfPreservationWindow,
		"lease expiries within this window may start self-preservation")
	fs.Float64Var(&f.ratio, "self-preservation-ratio", coordinator.DefaultSelfPreservationRatio,
		"fraction of the sessions, in (0, 1], whose leases must expire within the window to start self-preservation")
	fs.IntVar(&f.min, "self-preservation-min", coordinator.DefaultSelfPreservationMin,
		"fewest lease expiries within the window that start self-preservation")
	fs.DurationVar(&f.grace, "self-preservation-grace", 0,
		"how long after its lease expired a session queued by self-preservation may register again before it is dropped (0: twice the window)")
	return f
}

// validate checks the flags, with errors that name them.
func (f *selfPreservationFlags) validate() error {
	switch {
	case f.window <= 0:
		return fmt.Errorf("--self-preservation-window must be positive, got %s", f.window)
	case math.IsNaN(f.ratio) || f.ratio <= 0 || f.ratio > 1:
		return fmt.Errorf("--self-preservation-ratio must be in (0, 1], got %v", f.ratio)
	case f.min < 1:
		return fmt.Errorf("--self-preservation-min must be at least 1, got %d", f.min)
	case f.grace < 0:
		return fmt.Errorf("--self-preservation-grace must not be negative (0: twice the window), got %s", f.grace)
	}
	return nil
}

// apply sets the coordinator's self-preservation settings.
func (f *selfPreservationFlags) apply(c *coordinator.Config) {
	c.SelfPreservationWindow = f.window
	c.SelfPreservationRatio = f.ratio
	c.SelfPreservationMin = f.min
	c.SelfPreservationGrace = f.grace
}
