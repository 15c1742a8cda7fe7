package demoload

import (
	"testing"
	"time"
)

func TestLatencies(t *testing.T) {
	var l Latencies
	if q := l.Quantile(0.99); q != 0 {
		t.Fatalf("empty p99 = %v", q)
	}
	for i := 1; i <= 1000; i++ {
		l.Add(time.Duration(i) * time.Millisecond)
	}
	p99 := l.Quantile(0.99)
	if p99 < 990*time.Millisecond || p99 > 1010*time.Millisecond {
		t.Fatalf("p99 of 1..1000 ms = %v, want 990 ms within 1%%", p99)
	}
}
