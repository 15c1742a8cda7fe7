package coordinator

import "fmt"

// switchHoldLocked says why no update may switch its service's default now,
// or "" when switches may go on. Every switch (WF, BF and CV alike) asks it
// first, and so does the end of a drain (CV, or a CV rollback): drained
// means no transaction may use the drained version again, which the
// transactions behind a hold may. Holds are:
//   - resync: after a failover or restart, sessions known in etcd that have
//     neither re-registered nor expired may own transactions the
//     coordinator has not seen (DESIGN.md §6);
//   - self-preservation (DESIGN.md §7), resumed from etcd by a new leader
//     too: the queued sessions' transactions are unknown to it.
func (c *Coordinator) switchHoldLocked() string {
	if n := c.sess.resyncPending(); n > 0 {
		return fmt.Sprintf("resync: %d sessions known in etcd have not re-registered", n)
	}
	return c.selfPreservationHoldLocked()
}
