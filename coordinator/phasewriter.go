package coordinator

import (
	"context"
	"sync"
	"sync/atomic"
)

// phaseWriter owns the update phase changes on their way to etcd and back
// (DESIGN.md §5: nothing on the event path waits for etcd). The
// orchestrator decides a change under the event lock and queues it; the
// writer's goroutine stores each in its own goroutine (one change per
// update at a time: the switching mark) and hands back what was stored, or
// why not, for the event lock's next holder to apply.
//
// Its mu guards the two lists; it is taken with or without the event lock
// and nothing is taken under it.
type phaseWriter struct {
	kick    chan struct{}
	mu      sync.Mutex
	queue   []*phaseChange // decided, to store
	stored  []storedPhase  // written (or failed), to apply
	storedN atomic.Int32   // len(stored), read without mu
	woke    wakeup         // signalled when a change is stored: it must be applied
}

// storedPhase is a change the phase writer wrote (err nil) or could not.
type storedPhase struct {
	pc  *phaseChange
	err error
}

func newPhaseWriter() *phaseWriter {
	return &phaseWriter{kick: make(chan struct{}, 1)}
}

// add queues a change to store.
func (w *phaseWriter) add(pc *phaseChange) {
	w.mu.Lock()
	w.queue = append(w.queue, pc)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// hasStored says, without locking, whether stored changes wait to apply.
func (w *phaseWriter) hasStored() bool { return w.storedN.Load() > 0 }

// takeStored returns the stored changes to apply, oldest first.
func (w *phaseWriter) takeStored() []storedPhase {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.stored
	w.stored = nil
	w.storedN.Add(-int32(len(out)))
	return out
}

// run stores the queued changes with store until ctx ends; after each it
// calls stored, from the storing goroutine, so that the change is applied
// as soon as someone can.
func (w *phaseWriter) run(ctx context.Context, store func(context.Context, *phaseChange) error, stored func()) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		}
		w.mu.Lock()
		queue := w.queue
		w.queue = nil
		w.mu.Unlock()
		for _, pc := range queue {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := store(ctx, pc)
				w.mu.Lock()
				w.stored = append(w.stored, storedPhase{pc, err})
				w.storedN.Add(1)
				w.mu.Unlock()
				w.woke.signal()
				stored()
			}()
		}
	}
}
