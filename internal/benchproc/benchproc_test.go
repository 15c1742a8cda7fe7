package benchproc

import "testing"

// The clock tick rate is read from the auxiliary vector; Linux on the
// usual architectures says 100.
func TestClockTicks(t *testing.T) {
	if hz := clockTicks(); hz == 0 || hz > 10000 {
		t.Fatalf("clock ticks %d", hz)
	}
}
