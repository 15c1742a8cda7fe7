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

// RoutingSettled reports whether instance's session has acknowledged
// every routing message its stream took, and none is pending on it (so
// its stream has no ack of its own to apply). Routing is scoped: a
// revision that changed nothing in the session's scope never reaches it,
// so this compares with the newest revision its stream took, not the
// newest revision.
func (c *Coordinator) RoutingSettled(instance string) bool {
	c.mu.Lock()
	s := c.sess.get(instance)
	c.mu.Unlock()
	if s == nil {
		return false
	}
	st := c.sess.attachedShared(s)
	if st == nil {
		return false
	}
	st.sendMu.Lock()
	taken, pending := st.routing.lastRev, st.routing.pend != nil
	st.sendMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	return !pending && taken > 0 && s.ackedRev >= taken
}

// ProgressRuns returns how many times the progress check ran.
func (c *Coordinator) ProgressRuns() uint64 { return c.progressRuns.Load() }

// WithRatePauseMax sets how long, at most, a stream over its event rate is
// not read at a time (maxRatePause otherwise).
func WithRatePauseMax(d time.Duration) func(*Config) {
	return func(c *Config) { c.ratePauseMax = d }
}

// UnderEventLock runs fn holding the event lock.
func (c *Coordinator) UnderEventLock(fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn()
}

// ImplicitSweepChunk is how many implicit-set entries the sweep looks at
// per hold of the event lock.
const ImplicitSweepChunk = implicitSweepChunk

// ImplicitPending returns the size of the implicit set: transactions
// created by a Call that the sweep still has to look at.
func (c *Coordinator) ImplicitPending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.implicit)
}

// SweepImplicit runs the implicit sweep as of now; between runs between
// two chunks, with the event lock released.
func (c *Coordinator) SweepImplicit(now time.Time, between func()) { c.sweepImplicit(now, between) }

// EventLockFree reports whether the event lock is free now (and leaves it so).
func (c *Coordinator) EventLockFree() bool {
	if !c.mu.TryLock() {
		return false
	}
	c.mu.Unlock()
	return true
}
