package coordinator_test

import (
	"slices"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
)

// After a failover, until every session known in etcd has re-registered or
// expired, FREENESS does not answer a bare "free": what the missing
// sidecars run is unknown, so the service is not free, and the answer names
// the missing sessions. Once they are back it is free again.
func TestFreenessDuringResyncNamesMissingSessions(t *testing.T) {
	cl := servertest.StartCluster(t, 2, spFailoverOpts(0))
	a := cl.Leader(spWait)
	deps := []string{"auth"}
	_, _, stopAuth := spSidecar(t, a, "auth-1", "auth", "v1", nil)
	_, _, stopPortal := spSidecar(t, a, "portal-1", "portal", "v1", deps)
	if f := a.FreeREST("auth"); !f.Free || f.ResyncMissing != 0 {
		t.Fatalf("auth before the failover: %v, want free with nobody missing", f)
	}
	stopAuth()
	stopPortal()
	cl.Crash(a)
	b := cl.Leader(spWait)
	f := b.FreeREST("auth")
	if f.Free || f.ResyncMissing != 2 || !slices.Equal(f.ResyncSessions, []string{"auth-1", "portal-1"}) {
		t.Fatalf("auth at the new leader before the sidecars are back: %v, want not free, auth-1 and portal-1 missing", f)
	}
	spSidecar(t, b, "auth-1", "auth", "v1", nil)
	if f := b.FreeREST("auth"); f.Free || f.ResyncMissing != 1 || !slices.Equal(f.ResyncSessions, []string{"portal-1"}) {
		t.Fatalf("auth with auth-1 back: %v, want not free, portal-1 missing", f)
	}
	spSidecar(t, b, "portal-1", "portal", "v1", deps)
	if f := b.FreeREST("auth"); !f.Free || f.ResyncMissing != 0 || len(f.ResyncSessions) != 0 {
		t.Fatalf("auth with every sidecar back: %v, want free", f)
	}
}
