package coordinator

import (
	"context"
	"errors"

	"github.com/coordinator/coordinator/storage"
)

// commit writes ops atomically through the store, which fences them (the
// leader's election key, DESIGN.md §6). A failed fence means another
// replica leads now: the coordinator stops acting (lostLeadership) and
// ErrFenced is returned.
func (c *Coordinator) commit(ctx context.Context, ops ...storage.Op) error {
	if c.fencedFlag.Load() {
		return ErrFenced
	}
	return c.checkFence(c.store.Commit(ctx, ops...))
}

// checkFence turns a store error that failed the fence into ErrFenced,
// after making the coordinator stop acting.
func (c *Coordinator) checkFence(err error) error {
	if errors.Is(err, storage.ErrFenced) {
		c.lostLeadership()
		return ErrFenced
	}
	return err
}

// lostLeadership makes the coordinator stop acting at once: streams end
// (their sidecars reconnect and are redirected to the new leader), no call
// decision or routing is sent any more, and OnFenced is told.
func (c *Coordinator) lostLeadership() {
	if !c.fencedFlag.CompareAndSwap(false, true) {
		return
	}
	c.lg.Warn("leadership lost: a write failed its fence; the coordinator stops acting")
	c.cancel()
	if c.cfg.OnFenced != nil {
		go c.cfg.OnFenced()
	}
}

// Abandon stops acting at once without writing anything: for a replica
// whose election session ended (another replica may lead already). Stop
// must still be called to release resources; it will not flush.
func (c *Coordinator) Abandon() {
	if c.fencedFlag.CompareAndSwap(false, true) {
		c.lg.Warn("leadership lost: the election session ended; the coordinator stops acting")
	}
	c.cancel()
}
