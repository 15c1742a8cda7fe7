package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/pflag"
)

// validateGCPercent checks --gc-percent: -1 turns the collector off (then
// only GOMEMLIMIT triggers it), 0 would collect without pause.
func validateGCPercent(p int) error {
	if p == 0 || p < -1 {
		return fmt.Errorf("--gc-percent %d: want a positive percentage, or -1 (off, with GOMEMLIMIT)", p)
	}
	return nil
}

// setGCPercent applies the GC target and returns the one it replaced.
func setGCPercent(p int) (previous int) { return debug.SetGCPercent(p) }

// gcFlagSet reports whether --gc-percent was given, on the command line
// or as COORDINATORD_GC_PERCENT (not GOGC).
func gcFlagSet(fs *pflag.FlagSet) bool { return fs.Changed("gc-percent") }
