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

// mootQueue is the FIFO of moot pins, on an array it reuses: the
// write-behind takes from the front (head moves on), events add at the
// back, and an add that finds the array full first moves the waiting pins
// to its start when at least half of it was taken. Re-slicing from the
// front instead, and dropping the array when empty, reallocated and copied
// the queue under the event lock again and again (285 MB in 5 s of
// bench/ingest -update-cycle, 40 % of what applying events allocated).
type mootQueue struct {
	buf  []mootPin // buf[head:] wait
	head int
}

// mootKeep is the largest array an emptied queue keeps (320 KB); a larger
// one, grown by a backlog, goes.
const mootKeep = 1 << 12

func (q *mootQueue) len() int { return len(q.buf) - q.head }

// at is the i-th waiting pin.
func (q *mootQueue) at(i int) *mootPin { return &q.buf[q.head+i] }

// front is the first k waiting pins.
func (q *mootQueue) front(k int) []mootPin { return q.buf[q.head : q.head+k] }

func (q *mootQueue) push(p mootPin) {
	if len(q.buf) == cap(q.buf) && q.head > 0 && q.head >= len(q.buf)/2 {
		n := copy(q.buf, q.buf[q.head:])
		clear(q.buf[n:])
		q.buf, q.head = q.buf[:n], 0
	}
	q.buf = append(q.buf, p)
}

// dropFront takes the first k waiting pins out.
func (q *mootQueue) dropFront(k int) {
	clear(q.buf[q.head : q.head+k]) // their keys may go
	q.head += k
	if q.head == len(q.buf) {
		q.buf, q.head = q.buf[:0], 0
		if cap(q.buf) > mootKeep {
			q.buf = nil
		}
	}
}

// truncate keeps the first n waiting pins.
func (q *mootQueue) truncate(n int) {
	clear(q.buf[q.head+n:])
	q.buf = q.buf[:q.head+n]
}

// notePinsLocked queues the keys of the pins txn may hold, at its END,
// before the engine forgets what it used: one per service mid-update with
// pinning that txn used. A key that was never written costs a no-op delete.
// It returns how many were queued before, for forgetPinsSince if the END
// fails.
func (o *orchestrator) notePinsLocked(txn string, epoch func() uint64) int {
	n := o.mootPins.len()
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
			if o.mootPins.len() >= maxMootPins {
				o.mootPins.dropFront(1)
				n = max(n-1, 0)
			}
			o.mootPins.push(mootPin{storage.DeletePin(m.name, txn), e})
		}
	}
	return n
}

// forgetPinsSince drops the pins notePinsLocked queued after the first n
// (the END they were noted for failed).
func (o *orchestrator) forgetPinsSince(n int) {
	if n < o.mootPins.len() {
		o.mootPins.truncate(n)
	}
}

// hasMootPins reports whether pins wait to be deleted.
func (o *orchestrator) hasMootPins() bool { return o.mootPins.len() > 0 }

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
	q := &o.mootPins
	k := 0
	for k < q.len() && len(ops) < max && q.at(k).epoch < before {
		key := q.at(k).del.Key()
		if !slices.ContainsFunc(q.front(k), func(p mootPin) bool { return p.del.Key() == key }) {
			ops = append(ops, q.at(k).del) // a batch names a key once
		}
		k++
	}
	q.dropFront(k)
	return ops
}
