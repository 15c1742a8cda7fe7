package coordinator

import "errors"

var (
	// ErrStopped is returned by operations on a coordinator that is stopping.
	ErrStopped = errors.New("coordinator: stopped")
	// ErrNotRegistered is returned for events on a stream without a session.
	ErrNotRegistered = errors.New("coordinator: stream has no registered session")
)
