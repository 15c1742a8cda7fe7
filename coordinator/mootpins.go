package coordinator

import (
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// maxMootPins bounds the pins of ended transactions waiting to be deleted
// (while etcd is unreachable, say). One dropped from the list stays in etcd
// until its update ends, which deletes every pin of its service.
const maxMootPins = 1 << 16

// A first-use pin (DESIGN.md §4.5) tells a replica that restores a live
// transaction which version it used of a service mid-update. Once the
// transaction has ended it tells nothing: a restored transaction whose
// record survives it is legacy (it blocks; it makes no call), and one whose
// record is gone is not restored. Pins of ended transactions used to stay
// in etcd, attached to their session's lease, until the update ended: a
// long update under load kept one key per transaction it saw (bench/abuse:
// ~500 a second, each in etcd's index, lease and database, all in the
// coordinator's process with an embedded etcd). They are deleted in the
// write-behind's batches instead.

// mootPin is the key of a pin of a transaction that ended, and the
// write-behind epoch it ended in.
type mootPin struct {
	key   string
	epoch uint64
}

// notePinsLocked queues the keys of the pins txn may hold, at its END,
// before the engine forgets what it used: one per service mid-update with
// pinning that txn used. A key that was never written costs a no-op delete.
func (c *Coordinator) notePinsLocked(txn string) {
	var epoch uint64
	for _, u := range c.active {
		if !u.strat.Pins() {
			continue
		}
		if _, used := c.eng.Used(txn, u.svc); !used {
			continue
		}
		if epoch == 0 {
			epoch = c.epoch()
		}
		if len(c.mootPins) >= maxMootPins {
			c.mootPins = c.mootPins[1:]
		}
		c.mootPins = append(c.mootPins, mootPin{c.keys.Pin(u.rec.Service, txn), epoch})
	}
}

// appendMootPinsLocked adds deletions of queued pins to ops, up to max ops
// in all (the write-behind collects again when its batch is full). A pin
// goes in the batch of its transaction's record deletion, or a later one,
// never an earlier one: so a replica restoring from etcd never finds a
// transaction's record without its pin. before and allTaken say which
// records this batch took: every one queued in an epoch before before, if
// allTaken.
func (c *Coordinator) appendMootPinsLocked(ops []clientv3.Op, max int, before uint64, allTaken bool) []clientv3.Op {
	if !allTaken {
		return ops
	}
	k := 0
	for k < len(c.mootPins) && len(ops) < max && c.mootPins[k].epoch < before {
		if !slices.ContainsFunc(c.mootPins[:k], func(p mootPin) bool { return p.key == c.mootPins[k].key }) {
			ops = append(ops, clientv3.OpDelete(c.mootPins[k].key)) // a batch names a key once
		}
		k++
	}
	c.mootPins = c.mootPins[k:]
	if len(c.mootPins) == 0 {
		c.mootPins = nil // let the backing array go
	}
	return ops
}
