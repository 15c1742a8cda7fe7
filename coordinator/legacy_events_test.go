package coordinator_test

import (
	"testing"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// After a failover the new leader holds the transactions it did not see
// start as legacy. The RETURN, DONE and END their sidecars send next, about
// sub-transactions of before the failover, are expected: never an error in
// the Ack; an END still ends the transaction.
func TestLegacyEventsAfterFailoverAreNotErrors(t *testing.T) {
	cl := servertest.StartCluster(t, 2, spFailoverOpts(0))
	a := cl.Leader(spWait)
	deps := []string{"auth"}
	_, _, stopAuth := spSidecar(t, a, "auth-1", "auth", "v1", nil)
	p, _, stopPortal := spSidecar(t, a, "portal-1", "portal", "v1", deps)
	servertest.Send(t, p, simsidecar.Begin("T1", 1), simsidecar.Call("T1", 1, "auth", 2))
	if err := a.Leader().Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	stopAuth()
	stopPortal()
	cl.Crash(a)
	b := cl.Leader(spWait)
	spSidecar(t, b, "auth-1", "auth", "v1", nil)
	p2, _, _ := spSidecar(t, b, "portal-1", "portal", "v1", deps, "T1")
	if f := b.FreeREST("auth"); f.Free || len(f.Blockers) != 1 || !f.Blockers[0].Legacy {
		t.Fatalf("auth at the new leader: %v, want blocked by legacy T1", f)
	}
	ack := servertest.SendAck(t, p2, simsidecar.Return("T1", 2), simsidecar.Done("T1", 1, "auth"))
	if len(ack.Errors) != 0 {
		t.Fatalf("RETURN and DONE of legacy T1: errors %v, want none", ack.Errors)
	}
	if len(ack.Late) != 1 || ack.Late[0].Seq != 1 || ack.Late[0].Reason != pb.LateReason_LATE_REASON_LEGACY {
		t.Fatalf("RETURN of legacy T1's sub from before the failover: late %v, want it reported late (legacy)", ack.Late)
	}
	if f := b.FreeREST("auth"); f.Free {
		t.Fatalf("auth after the RETURN and DONE of legacy T1: %v, want still blocked until T1 ends", f)
	}
	ack = servertest.SendAck(t, p2, simsidecar.End("T1"))
	if len(ack.Errors) != 0 {
		t.Fatalf("END of legacy T1: errors %v, want none", ack.Errors)
	}
	if f := b.FreeREST("auth"); !f.Free {
		t.Fatalf("auth after legacy T1 ended: %v, want free", f)
	}
}
