package sidecar_test

import (
	"context"
	"errors"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/sidecar"
)

// Routing is scoped: a client gets the routes of the services its service
// may call. A call to a registered service it did not declare is asked of
// the coordinator (a waiting CALL), decided, and routed to an endpoint of
// the decided version once its route arrives; from then on the service is
// in the client's scope. A name that is no service is ErrUnknownService,
// with no event rejected.
func TestCallOutsideTheScopeIsDecidedThenRouted(t *testing.T) {
	ts := servertest.Start(t, "")
	a := startClient(t, ts, sidecar.Config{InstanceID: "a-1", Service: "a", Version: "v1"})
	startClient(t, ts, sidecar.Config{InstanceID: "b-1", Service: "b", Version: "v1", Address: "127.0.0.1:7001"})
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	tctx, _ := a.Begin(ctx)
	for i := range 2 {
		call, err := a.Route(tctx, "b")
		if err != nil {
			t.Fatalf("call %d to b, outside a's declared dependencies: %v", i, err)
		}
		if call.Version != "v1" || call.Address != "127.0.0.1:7001" {
			t.Fatalf("call %d to b routed to %s at %q, want v1 at 127.0.0.1:7001", i, call.Version, call.Address)
		}
		call.Finish()
	}
	if _, err := a.Route(tctx, "no-such-service"); !errors.Is(err, sidecar.ErrUnknownService) {
		t.Fatalf("call to a name no service registered: %v, want ErrUnknownService", err)
	}
	if err := a.End(tctx); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, within, "the transaction to end", func() bool { return ts.Txns("").Total == 0 })
	noRejections(t, a)
}
