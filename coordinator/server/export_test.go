package server

import "context"

// SetConnectHook makes f see the context of every sidecar stream s hands
// on (to its coordinator, or to the follower's redirect), after
// authentication: tests read the identity in it.
func SetConnectHook(s *Server, f func(context.Context)) { s.connectHook.Store(&f) }
