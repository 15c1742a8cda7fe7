package coordinator

import "fmt"

// switchHoldLocked says why no update may switch its service's default now,
// or "" when switches may go on. Every switch (WF, BF and CV alike) asks it
// first. Holds are:
//   - resync: after a failover or restart, sessions known in etcd that have
//     neither re-registered nor expired may own transactions the
//     coordinator has not seen (DESIGN.md §6);
//   - self-preservation (DESIGN.md §7).
func (c *Coordinator) switchHoldLocked() string {
	if n := len(c.resyncWait); n > 0 {
		return fmt.Sprintf("resync: %d sessions known in etcd have not re-registered", n)
	}
	return c.selfPreservationHoldLocked()
}
