package coordinator_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// A session speaks only for its own service and its own transactions
// (DESIGN.md §3, "sent by"). A registered session of another service (x)
// that knows a victim transaction's ids tries to END it, RETURN its
// sub-transaction, say it is DONE with a service, CALL on its behalf, and
// plant a DONE before the sub-transaction starts: each is refused with
// PermissionDenied (or, for the planted DONE, dropped when the sub starts
// elsewhere), counted, and changes nothing, so the victim still blocks its
// service until its own sessions end it.
func TestSessionsSpeakOnlyForThemselves(t *testing.T) {
	ts := startMem(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := ts.Sidecar("a-1", "a", "v1", "b")
	b := ts.Sidecar("b-1", "b", "v1", "c")
	ts.Sidecar("c-1", "c", "v1")
	x := ts.Sidecar("x-1", "x", "v1")
	for _, sc := range []*simsidecar.Sidecar{a, b, x} {
		defer keepAlive(t, sc)()
	}
	T := servertest.TxnID(1)
	servertest.Send(t, a, simsidecar.Begin(T, 1), simsidecar.Call(T, 1, "b", 2))
	servertest.Send(t, b, simsidecar.Call(T, 2, "c", 3))

	refused := func(kind string) float64 {
		return ts.Metric(`coordinator_ownership_refusals_total{type="` + kind + `"}`)
	}
	attacks := []struct {
		kind, what string
		ev         *pb.Event
		msg        string
	}{
		{"END", "END of a's transaction", simsidecar.End(T), `it is not a root of instance "x-1"`},
		{"RETURN", "RETURN of the sub a called at b", simsidecar.Return(T, 2), `service "x" did not call it`},
		{"DONE", "DONE about b's sub", simsidecar.Done(T, 2, "c"), "runs at another service"},
		{"CALL", "CALL from a's root", simsidecar.Call(T, 1, "b", 9), "runs at another service"},
	}
	for _, at := range attacks {
		before := refused(at.kind)
		ack, err := x.Send(ctx, at.ev)
		if err != nil {
			t.Fatal(err)
		}
		if len(ack.Errors) != 1 || codes.Code(ack.Errors[0].Code) != codes.PermissionDenied || !strings.Contains(ack.Errors[0].Message, at.msg) {
			t.Errorf("%s by x: ack %v, want one PermissionDenied error saying %q", at.what, ack, at.msg)
		}
		if got := refused(at.kind) - before; got != 1 {
			t.Errorf("%s by x: ownership refusals of %s rose by %v, want 1", at.what, at.kind, got)
		}
	}

	// A DONE planted before its sub starts is dropped when the sub starts
	// at another service than x; b's own early DONE applies.
	servertest.Send(t, x, simsidecar.Done(T, 7, "c"))
	servertest.Send(t, b, simsidecar.Done(T, 8, "c"))
	servertest.Send(t, a, simsidecar.Call(T, 1, "b", 7), simsidecar.Call(T, 1, "b", 8))

	txns := ts.Txns("").GetTransactions()
	if len(txns) != 1 || txns[0].TxnId != T {
		t.Fatalf("transactions %v, want the victim alone, live", txns)
	}
	running := map[uint64]*pb.SubTransaction{}
	for _, s := range txns[0].Running {
		running[s.Id] = s
	}
	for id, want := range map[uint64]string{1: "a", 2: "b", 3: "c", 7: "b", 8: "b"} {
		if s := running[id]; s == nil || s.Service != want {
			t.Errorf("sub %d: %v, want running at %s", id, s, want)
		}
	}
	if _, ok := running[9]; ok {
		t.Error("x's CALL started sub 9")
	}
	if d := running[2].GetDone(); len(d) != 0 {
		t.Errorf("sub 2 done with %v: x's DONE applied", d)
	}
	if d := running[7].GetDone(); len(d) != 0 {
		t.Errorf("sub 7 done with %v: x's planted DONE applied", d)
	}
	if d := running[8].GetDone(); !slices.Equal(d, []string{"c"}) {
		t.Errorf("sub 8 done with %v, want b's own DONE (c)", d)
	}
	for _, svc := range []string{"b", "c"} {
		if f := ts.Freeness(svc); f.Free {
			t.Errorf("%s free while the victim runs there", svc)
		}
	}

	// Its own sessions end it: every service is free again.
	servertest.Send(t, b, simsidecar.Return(T, 3))
	servertest.Send(t, a, simsidecar.Return(T, 2), simsidecar.Return(T, 7), simsidecar.Return(T, 8), simsidecar.End(T))
	for _, svc := range []string{"a", "b", "c"} {
		if f := ts.Freeness(svc); !f.Free {
			t.Errorf("%s not free after the victim ended: %v", svc, f.Blockers)
		}
	}
}
