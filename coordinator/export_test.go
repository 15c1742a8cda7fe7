package coordinator

import "time"

// TouchRoutingUnderEventLock marks service's route changed holding the
// event lock, as event application does after a change, and runs fn with
// the revision before releasing it.
func (c *Coordinator) TouchRoutingUnderEventLock(service string, fn func(rev uint64)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn(c.routing.changed(c.eng.Service(service), service))
}

// RoutingSettled reports whether instance's session has acknowledged the
// current routing revision (so its stream has no ack of its own to apply).
func (c *Coordinator) RoutingSettled(instance string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sess.get(instance)
	return s != nil && s.ackedRev >= c.routing.revision()
}

// ProgressRuns returns how many times the progress check ran.
func (c *Coordinator) ProgressRuns() uint64 { return c.progressRuns.Load() }

// WithRatePauseMax sets how long, at most, a stream over its event rate is
// not read at a time (maxRatePause otherwise).
func WithRatePauseMax(d time.Duration) func(*Config) {
	return func(c *Config) { c.ratePauseMax = d }
}
