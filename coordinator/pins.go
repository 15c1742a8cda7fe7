package coordinator

import (
	"context"
	"errors"
	"sync"
	"time"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// pinCommitter group-commits the first-use pins of transactions calling a
// service mid-update: each CallDecision that carries a pin is sent only
// after its pin is in etcd, and many pins share one etcd transaction; a
// few transactions are in flight at once.
type pinCommitter struct {
	c     *Coordinator
	mu    sync.Mutex
	queue []decision
	kick  chan struct{}
}

func newPinCommitter(c *Coordinator) *pinCommitter {
	return &pinCommitter{c: c, kick: make(chan struct{}, 1)}
}

func (p *pinCommitter) add(d decision) {
	p.mu.Lock()
	p.queue = append(p.queue, d)
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

func (p *pinCommitter) take() []decision {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(len(p.queue), storage.DefaultMaxOps)
	batch := p.queue[:n:n]
	p.queue = p.queue[n:]
	return batch
}

// pinsInFlight bounds the pin transactions in flight: while one waits for
// etcd's fsync the next batch is already on its way (pins of different
// transactions are independent), so a call's answer waits for at most about
// one commit, not a queue of them.
const pinsInFlight = 4

func (p *pinCommitter) run() {
	sem := make(chan struct{}, pinsInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-p.c.ctx.Done():
			return
		case <-p.kick:
		}
		for {
			select {
			case sem <- struct{}{}:
			case <-p.c.ctx.Done():
				return
			}
			batch := p.take()
			if len(batch) == 0 {
				<-sem
				break
			}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				p.commit(batch)
			}()
		}
	}
}

// commit writes one batch, retrying transient errors; a pin whose lease is
// gone (the transaction's session expired) is answered with an error.
func (p *pinCommitter) commit(batch []decision) {
	backoff := 5 * time.Millisecond
	for {
		// One put per key: several answers may wait on one pin (a
		// concurrent sub-transaction, a replayed CALL), and etcd refuses a
		// transaction that names a key twice.
		ops := make([]storage.Op, 0, len(batch))
		seen := make(map[string]bool, len(batch))
		for _, d := range batch {
			if key := d.pin.Key(); !seen[key] {
				seen[key] = true
				ops = append(ops, *d.pin)
			}
		}
		ctx, cancel := context.WithTimeout(p.c.ctx, 5*time.Second)
		start := time.Now()
		err := p.c.commit(ctx, ops...)
		cancel()
		if err == nil {
			p.c.metrics.pinCommit.Observe(time.Since(start).Seconds())
		}
		if err == nil || errors.Is(err, storage.ErrLeaseExpired) {
			p.settled(batch)
		}
		switch {
		case errors.Is(err, ErrFenced):
			return // another replica leads: these calls get no answer from here
		case err == nil:
			for _, d := range batch {
				p.c.sendDecision(d)
			}
			return
		case errors.Is(err, storage.ErrLeaseExpired) && len(batch) > 1:
			for _, d := range batch {
				p.commit([]decision{d})
			}
			return
		case errors.Is(err, storage.ErrLeaseExpired):
			d := batch[0]
			d.msg = &pb.CallDecision{Seq: d.msg.Seq, Error: "the transaction's session expired"}
			p.c.sendDecision(d)
			return
		case p.c.ctx.Err() != nil:
			return // stopping: the streams are ending too
		}
		p.c.lg.Warn("commit pins, retrying", "pins", len(batch), "backoff", backoff, "error", err)
		select {
		case <-time.After(backoff):
		case <-p.c.ctx.Done():
			return
		}
		backoff = min(2*backoff, time.Second)
	}
}

// pinKey is the key of txn's pin of svc among pendingPins: its op's Key.
func pinKey(svc, txn string) string { return storage.PutPin(svc, txn, "", storage.NoLease).Key() }

// settled forgets the pending pins of batch: committed, or their session is
// gone.
func (p *pinCommitter) settled(batch []decision) {
	p.c.mu.Lock()
	defer p.c.mu.Unlock()
	for _, d := range batch {
		key := d.pin.Key()
		if p.c.orch.pendingPins[key] == d.pin {
			delete(p.c.orch.pendingPins, key)
		}
	}
}
