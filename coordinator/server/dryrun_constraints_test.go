package server_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// A dry run names the constraints of each strategy with the facts of now:
// which sessions must acknowledge update mode, whether the service is free
// and how many transactions block it or used the old version, and the
// bounds the update would be aborted at.
func TestDryRunConstraintsPerStrategy(t *testing.T) {
	ts := servertest.Start(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	portal := ts.LongSidecar("portal-1", "portal", "v1", "auth")
	ts.LongSidecar("auth-1", "auth", "v1")
	ts.LongSidecar("auth-2", "auth", "v2")
	t1, t2 := servertest.TxnID(1), servertest.TxnID(2)
	// t1 used auth@v1 and runs on at portal: it blocks auth. t2 has not
	// called auth yet: it does not.
	servertest.Send(t, portal, simsidecar.Begin(t1, 1), simsidecar.Call(t1, 1, "auth", 2), simsidecar.Return(t1, 2),
		simsidecar.Begin(t2, 1))
	servertest.Eventually(t, 10*time.Second, "auth-2 to acknowledge its routing", func() bool {
		p, err := ts.Admin.DryRunUpdate(ctx, &pb.StartUpdateRequest{Service: "auth", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV})
		return err == nil && p.TargetAcknowledged == 1
	})

	for _, tc := range []struct {
		req  *pb.StartUpdateRequest
		want []string
	}{
		{&pb.StartUpdateRequest{Strategy: pb.Strategy_STRATEGY_BF, Timeout: durationpb.New(time.Minute), MaxBlock: durationpb.New(5 * time.Second)},
			[]string{
				"PREPARING: 1 session that can call auth must acknowledge update mode (aborts at prepare-timeout 2m0s)",
				"BF: switches to v2 once auth is free; auth is not free now (1 transaction blocks it); aborts at timeout 1m0s",
				"BF: meanwhile calls of transactions that have not used auth are held; aborts when one is held max-block 5s",
			}},
		{&pb.StartUpdateRequest{Strategy: pb.Strategy_STRATEGY_CV, PrepareTimeout: durationpb.New(30 * time.Second)},
			[]string{
				"PREPARING: 1 session that can call auth must acknowledge update mode (aborts at prepare-timeout 30s)",
				"CV: switches to v2 once PREPARING is over, free or not",
				"CV: transactions that used auth@v1 keep it; DRAINING lasts until none may call it (1 transaction now)",
			}},
		{&pb.StartUpdateRequest{Strategy: pb.Strategy_STRATEGY_NAIVE},
			[]string{"NAIVE: switches to v2 at once with no pinning: the 1 transaction that blocks auth now may run on both versions"}},
	} {
		tc.req.Service, tc.req.ToVersion = "auth", "v2"
		p, err := ts.Admin.DryRunUpdate(ctx, tc.req)
		if err != nil {
			t.Fatalf("%v: %v", tc.req.Strategy, err)
		}
		if !p.WouldStart || p.Blocking != 1 || p.CallerSessions != 1 {
			t.Errorf("%v: would start %v, blocking %d, callers %d; want true, 1, 1", tc.req.Strategy, p.WouldStart, p.Blocking, p.CallerSessions)
		}
		for _, w := range tc.want {
			if !slices.Contains(p.Constraints, w) {
				t.Errorf("%v: constraints %q lack %q", tc.req.Strategy, p.Constraints, w)
			}
		}
	}
	// NAIVE counts what may run on both versions: two, then none.
	naive := func(want string) {
		t.Helper()
		servertest.Eventually(t, 10*time.Second, want, func() bool {
			p, err := ts.Admin.DryRunUpdate(ctx, &pb.StartUpdateRequest{Service: "auth", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_NAIVE})
			return err == nil && slices.Equal(p.Constraints, []string{want})
		})
	}
	servertest.Send(t, portal, simsidecar.Call(t2, 1, "auth", 2), simsidecar.Return(t2, 2))
	naive("NAIVE: switches to v2 at once with no pinning: the 2 transactions that block auth now may run on both versions")
	servertest.Send(t, portal, simsidecar.End(t1), simsidecar.End(t2))
	naive("NAIVE: switches to v2 at once with no pinning: no transaction blocks auth now, but any that does at the switch may run on both versions")

	if l, err := ts.Admin.ListUpdates(ctx, &pb.ListUpdatesRequest{}); err != nil || len(l.Updates) != 0 {
		t.Fatalf("a dry run started an update: %v %v", l, err)
	}
}
