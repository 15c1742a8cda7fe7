package coordinator

// BumpRoutingUnderEventLock makes a new routing revision holding the event
// lock, as event application does after a change, and runs fn with the
// revision before releasing it.
func (c *Coordinator) BumpRoutingUnderEventLock(fn func(rev uint64)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fn(c.bumpRoutingLocked())
}
