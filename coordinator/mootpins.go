package coordinator

import (
	"slices"

	"github.com/coordinator/coordinator/storage"
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

// mootPin is a pin of a transaction that ended (its op deletes it), and
// the write-behind epoch it ended in.
type mootPin struct {
	del   storage.Op
	epoch uint64
}

// notePinsLocked queues the keys of the pins txn may hold, at its END,
// before the engine forgets what it used: one per service mid-update with
// pinning that txn used. A key that was never written costs a no-op delete.
// It returns how many were queued before, for forgetPinsSince if the END
// fails.
func (o *orchestrator) notePinsLocked(txn string, epoch func() uint64) int {
	n := len(o.mootPins)
	var e uint64
	for u := range o.upd.actives() {
		if !u.strat.Pins() {
			continue
		}
		for _, m := range u.members {
			if _, used := o.eng.Used(txn, m.svc); !used {
				continue
			}
			if e == 0 {
				e = epoch()
			}
			if len(o.mootPins) >= maxMootPins {
				o.mootPins = o.mootPins[1:]
				n = max(n-1, 0)
			}
			o.mootPins = append(o.mootPins, mootPin{storage.DeletePin(m.name, txn), e})
		}
	}
	return n
}

// forgetPinsSince drops the pins notePinsLocked queued after the first n
// (the END they were noted for failed).
func (o *orchestrator) forgetPinsSince(n int) {
	if n < len(o.mootPins) {
		o.mootPins = o.mootPins[:n]
	}
}

// hasMootPins reports whether pins wait to be deleted.
func (o *orchestrator) hasMootPins() bool { return len(o.mootPins) > 0 }

// appendMootPinsLocked adds deletions of queued pins to ops, up to max ops
// in all (the write-behind collects again when its batch is full). A pin
// goes in the batch of its transaction's record deletion, or a later one,
// never an earlier one: so a replica restoring from etcd never finds a
// transaction's record without its pin. before and allTaken say which
// records this batch took: every one queued in an epoch before before, if
// allTaken.
func (o *orchestrator) appendMootPinsLocked(ops []storage.Op, max int, before uint64, allTaken bool) []storage.Op {
	if !allTaken {
		return ops
	}
	k := 0
	for k < len(o.mootPins) && len(ops) < max && o.mootPins[k].epoch < before {
		key := o.mootPins[k].del.Key()
		if !slices.ContainsFunc(o.mootPins[:k], func(p mootPin) bool { return p.del.Key() == key }) {
			ops = append(ops, o.mootPins[k].del) // a batch names a key once
		}
		k++
	}
	o.mootPins = o.mootPins[k:]
	if len(o.mootPins) == 0 {
		o.mootPins = nil // let the backing array go
	}
	return ops
}
