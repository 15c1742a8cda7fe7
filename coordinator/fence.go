package coordinator

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// commit writes ops in one etcd transaction, conditional on the fence
// (Config.Fence). A failed fence means another replica leads now: the
// coordinator stops acting (lostLeadership) and ErrFenced is returned.
func (c *Coordinator) commit(ctx context.Context, ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	if c.fenced.Load() {
		return nil, ErrFenced
	}
	resp, err := c.cli.Txn(ctx).If(c.cfg.Fence...).Then(ops...).Commit()
	if err != nil {
		return nil, err
	}
	if !resp.Succeeded {
		c.lostLeadership()
		return nil, ErrFenced
	}
	return resp, nil
}

// lostLeadership makes the coordinator stop acting at once: streams end
// (their sidecars reconnect and are redirected to the new leader), no call
// decision or routing table is sent any more, and OnFenced is told.
func (c *Coordinator) lostLeadership() {
	if !c.fenced.CompareAndSwap(false, true) {
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
	if c.fenced.CompareAndSwap(false, true) {
		c.lg.Warn("leadership lost: the election session ended; the coordinator stops acting")
	}
	c.cancel()
}
