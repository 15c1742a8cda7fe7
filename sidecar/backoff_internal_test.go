package sidecar

import (
	"testing"
	"time"
)

// Reconnect attempts wait at most a second, whatever the heartbeat
// interval, and at most the interval when it is shorter.
func TestBackoffIsCapped(t *testing.T) {
	for _, hb := range []time.Duration{200 * time.Millisecond, DefaultHeartbeatInterval, time.Minute} {
		c := &Client{cfg: Config{HeartbeatInterval: hb}}
		limit := min(hb, maxReconnectBackoff)
		for n := range 40 {
			if d := c.backoff(n); d > limit || d < 0 {
				t.Fatalf("heartbeat %v: backoff(%d) = %v, want within [0, %v]", hb, n, d, limit)
			}
		}
		if d := c.backoff(30); d < limit/2 {
			t.Errorf("heartbeat %v: backoff(30) = %v, want at least half the cap %v", hb, d, limit)
		}
	}
}
