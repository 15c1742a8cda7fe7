package sidecar_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/sidecar"
)

func TestOutcomeClasses(t *testing.T) {
	var call sidecar.Call
	for _, tc := range []struct {
		status int
		err    error
		want   pb.OutcomeClass
	}{
		{200, nil, pb.OutcomeClass_OUTCOME_CLASS_OK},
		{302, nil, pb.OutcomeClass_OUTCOME_CLASS_OK},
		{404, nil, pb.OutcomeClass_OUTCOME_CLASS_CLIENT_ERROR},
		{503, nil, pb.OutcomeClass_OUTCOME_CLASS_SERVER_ERROR},
		{0, errors.New("connection refused"), pb.OutcomeClass_OUTCOME_CLASS_SERVER_ERROR},
		{0, context.DeadlineExceeded, pb.OutcomeClass_OUTCOME_CLASS_SERVER_ERROR},
		{0, fmt.Errorf("get: %w", context.Canceled), pb.OutcomeClass_OUTCOME_CLASS_CLIENT_ERROR},
	} {
		if o := call.HTTPOutcome(tc.status, tc.err); o.Class != tc.want {
			t.Errorf("HTTP %d %v: %v, want %v", tc.status, tc.err, o.Class, tc.want)
		}
	}
	for _, tc := range []struct {
		err  error
		want pb.OutcomeClass
	}{
		{nil, pb.OutcomeClass_OUTCOME_CLASS_OK},
		{status.Error(codes.InvalidArgument, "x"), pb.OutcomeClass_OUTCOME_CLASS_CLIENT_ERROR},
		{status.Error(codes.Unavailable, "x"), pb.OutcomeClass_OUTCOME_CLASS_SERVER_ERROR},
		{status.Error(codes.Internal, "x"), pb.OutcomeClass_OUTCOME_CLASS_SERVER_ERROR},
	} {
		if o := call.GRPCOutcome(tc.err); o.Class != tc.want || o.Code != uint32(status.Code(tc.err)) {
			t.Errorf("gRPC %v: %v %d, want %v", tc.err, o.Class, o.Code, tc.want)
		}
	}
}

// Transport reports each decided call's outcome with its RETURN: a canary
// whose new version answers 500 to every fifth call is aborted by its
// analysis, the reason naming the error rates.
func TestTransportReportsOutcomesToCanaryAnalysis(t *testing.T) {
	ts := servertest.Start(t, "")
	ok := func(s *service, w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, s.version) }
	var n atomic.Int64
	startService(t, ts, "auth", "v1", nil, ok)
	startService(t, ts, "auth", "v2", nil, func(s *service, w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%5 == 0 {
			http.Error(w, "v2 fails", http.StatusInternalServerError)
			return
		}
		ok(s, w, r)
	})
	portal := startService(t, ts, "portal", "v1", []string{"auth"}, ok)
	ctx := context.Background()
	u, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "auth", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV,
		CanarySteps: []uint32{50, 100}, MaxErrorRate: 0.05})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, "CANARY", func() bool {
		g, err := ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		return err == nil && g.Phase == pb.Phase_PHASE_CANARY
	})
	var g *pb.Update
	for i := 0; i < 400; i++ {
		tctx, _ := portal.Begin(ctx)
		_, _ = get(tctx, portal.http, "http://auth/", nil)
		_ = portal.End(tctx)
		if g, err = ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id}); err == nil && g.Phase == pb.Phase_PHASE_ABORTED {
			break
		}
	}
	servertest.Eventually(t, 10*time.Second, "the analysis to abort", func() bool {
		g, err = ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		return err == nil && g.Phase == pb.Phase_PHASE_ABORTED
	})
	if !strings.Contains(g.Reason, "analysis: error rate of the new version") {
		t.Fatalf("reason %q", g.Reason)
	}
	t.Logf("aborted after %d calls of v2: %s", n.Load(), g.Reason)
}
