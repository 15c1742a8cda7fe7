package server

import (
	"context"
	"time"
)

// SetConnectHook makes f see the context of every sidecar stream s hands
// on (to its coordinator, or to the follower's redirect), after
// authentication: tests read the identity in it.
func SetConnectHook(s *Server, f func(context.Context)) { s.connectHook.Store(&f) }

// SetStateKeepalive sets how long a WatchState stream stays silent
// before a keepalive, until the test ends; set it before opening streams.
func SetStateKeepalive(t interface{ Cleanup(func()) }, d time.Duration) {
	old := stateKeepalive
	stateKeepalive = d
	t.Cleanup(func() { stateKeepalive = old })
}
