package coordinator

import "errors"

var (
	// ErrStopped is returned by operations on a coordinator that is stopping.
	ErrStopped = errors.New("coordinator: stopped")
	// ErrNotRegistered is returned for events on a stream without a session.
	ErrNotRegistered = errors.New("coordinator: stream has no registered session")
	// ErrFenced is returned by a write whose fence compare failed: the
	// election key it was conditional on is gone, this replica no longer
	// leads, and the coordinator has stopped acting.
	ErrFenced = errors.New("coordinator: fenced: no longer the leader")
)
