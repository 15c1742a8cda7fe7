package coordinator

// wakeup tells a loop that sleeps while it has nothing to do that it may
// have something again. It holds at most one signal: a signal sent while
// the loop is busy ends its next sleep at once, so none is lost.
type wakeup chan struct{}

func newWakeup() wakeup { return make(wakeup, 1) }

// signal never blocks; on a nil wakeup it does nothing.
func (w wakeup) signal() {
	select {
	case w <- struct{}{}:
	default:
	}
}
