package server_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The services view over gRPC and REST: what a service runs by default,
// each version's instances and live transactions, freeness, the update in
// progress and, once it is over, the last update.
func TestServicesView(t *testing.T) {
	ts := servertest.Start(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	portal := ts.LongSidecar("portal-1", "portal", "v1", "auth")
	ts.LongSidecar("auth-1", "auth", "v1")
	ts.LongSidecar("auth-2", "auth", "v1")
	ts.LongSidecar("auth-3", "auth", "v2")
	txn := servertest.TxnID(1)
	servertest.Send(t, portal, simsidecar.Begin(txn, 1), simsidecar.Call(txn, 1, "auth", 2), simsidecar.Return(txn, 2))

	getService := func(req *pb.GetServiceRequest) *pb.ServiceState {
		t.Helper()
		st, err := ts.Admin.GetService(ctx, req)
		if err != nil {
			t.Fatalf("GetService %v: %v", req, err)
		}
		return st
	}
	st := getService(&pb.GetServiceRequest{Service: "auth"})
	if st.Name != "auth" || st.DefaultVersion != "v1" || st.Free || st.Blocking != 1 || st.LiveTransactions != 1 ||
		st.Update != nil || st.LastUpdate != nil || len(st.Versions) != 2 {
		t.Fatalf("GetService auth = %v", st)
	}
	v1, v2 := st.Versions[0], st.Versions[1]
	if v1.Version != "v1" || !v1.Default || v1.Instances != 2 || v1.Connected != 2 || v1.LiveTransactions != 1 ||
		!slices.Equal(v1.Transactions, []string{txn}) || len(v1.InstanceList) != 2 || v1.InstanceList[0].InstanceId != "auth-1" {
		t.Fatalf("auth v1 = %v", v1)
	}
	if v2.Version != "v2" || v2.Default || v2.Instances != 1 || v2.LiveTransactions != 0 || v2.InstanceList[0].InstanceId != "auth-3" {
		t.Fatalf("auth v2 = %v", v2)
	}
	// REST answers the same.
	var rest pb.ServiceState
	if code := ts.REST("/v1/services/auth", &rest); code != http.StatusOK || !proto.Equal(&rest, st) {
		t.Fatalf("GET /v1/services/auth: HTTP %d\n%v\nwant\n%v", code, &rest, st)
	}
	// Instances are bounded, by version then id.
	if st := getService(&pb.GetServiceRequest{Service: "auth", InstanceLimit: 2, TxnLimit: 1}); len(st.Versions[0].InstanceList) != 2 ||
		len(st.Versions[1].InstanceList) != 0 || st.Versions[1].Instances != 1 {
		t.Fatalf("instance_limit 2: %v", st)
	}

	list, err := ts.Admin.ListServices(ctx, &pb.ListServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if list.Total != 2 || len(list.Services) != 2 || list.Services[0].Name != "auth" || list.Services[1].Name != "portal" ||
		list.Services[0].Versions[0].LiveTransactions != 1 || list.Services[0].Versions[0].InstanceList != nil ||
		list.Services[0].Versions[0].Transactions != nil || list.Services[1].Free { // t-1 runs at portal
		t.Fatalf("ListServices = %v", list)
	}
	var restList pb.ListServicesResponse
	if code := ts.REST("/v1/services?limit=1", &restList); code != http.StatusOK || restList.Total != 2 ||
		len(restList.Services) != 1 || restList.Services[0].Name != "auth" {
		t.Fatalf("GET /v1/services?limit=1: HTTP %d %v", code, &restList)
	}

	// Mistakes: unknown service, bad limits.
	if _, err := ts.Admin.GetService(ctx, &pb.GetServiceRequest{Service: "nosuch"}); status.Code(err) != codes.NotFound ||
		!strings.Contains(err.Error(), `unknown service "nosuch"`) {
		t.Fatalf("GetService nosuch: %v", err)
	}
	if code := ts.REST("/v1/services/nosuch", nil); code != http.StatusNotFound {
		t.Fatalf("GET /v1/services/nosuch: HTTP %d, want 404", code)
	}
	if _, err := ts.Admin.ListServices(ctx, &pb.ListServicesRequest{Limit: 10001}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ListServices limit 10001: %v", err)
	}
	if code := ts.REST("/v1/services/auth?txnLimit=1001", nil); code != http.StatusBadRequest {
		t.Fatalf("GET /v1/services/auth?txnLimit=1001: HTTP %d, want 400", code)
	}

	// A WF update waits for the transaction: the view shows it in progress.
	u, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "auth", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_WF})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 10*time.Second, "the update to wait", func() bool {
		st := getService(&pb.GetServiceRequest{Service: "auth"})
		return st.Update.GetId() == u.Id && st.Update.Phase == pb.Phase_PHASE_WAITING && st.Update.Progress.GetBlocking() == 1
	})
	servertest.Send(t, portal, simsidecar.End(txn))
	servertest.Eventually(t, 10*time.Second, "the update to end", func() bool {
		st := getService(&pb.GetServiceRequest{Service: "auth"})
		return st.Update == nil && st.LastUpdate.GetId() == u.Id
	})
	st = getService(&pb.GetServiceRequest{Service: "auth"})
	if st.DefaultVersion != "v2" || !st.Free || st.LastUpdate.Phase != pb.Phase_PHASE_DONE || len(st.LastUpdate.History) == 0 ||
		!st.Versions[1].Default || st.Versions[0].Default || st.Versions[0].LiveTransactions != 0 {
		t.Fatalf("after the update: %v", st)
	}
	list, err = ts.Admin.ListServices(ctx, &pb.ListServicesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if last := list.Services[0].LastUpdate; last.GetId() != u.Id || last.History != nil {
		t.Fatalf("ListServices: last update %v, want %s without its history", last, u.Id)
	}
}

// A dry run says what StartUpdate would do, and starts nothing.
func TestDryRunUpdate(t *testing.T) {
	ts := servertest.Start(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	portal := ts.LongSidecar("portal-1", "portal", "v1", "auth")
	ts.LongSidecar("auth-1", "auth", "v1")
	ts.LongSidecar("auth-2", "auth", "v2")
	txn := servertest.TxnID(7)
	servertest.Send(t, portal, simsidecar.Begin(txn, 1), simsidecar.Call(txn, 1, "auth", 2), simsidecar.Return(txn, 2))

	req := &pb.StartUpdateRequest{Service: "auth", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_WF}
	var plan *pb.UpdatePlan
	servertest.Eventually(t, 10*time.Second, "auth-2 to acknowledge its routing", func() bool {
		var err error
		if plan, err = ts.Admin.DryRunUpdate(ctx, req); err != nil {
			t.Fatal(err)
		}
		return plan.TargetAcknowledged == 1
	})
	if !plan.WouldStart || plan.Refused != "" || plan.FromVersion != "v1" || plan.TargetInstances != 1 || plan.TargetConnected != 1 ||
		plan.TargetAcknowledged != 1 || plan.Free || plan.Blocking != 1 || len(plan.Blockers) != 1 || plan.Blockers[0].TxnId != txn ||
		plan.CallerSessions != 1 || plan.Timeout.AsDuration() != time.Hour || len(plan.Constraints) != 2 ||
		!strings.HasPrefix(plan.Constraints[1], "WF: switches to v2 only once auth is free; auth is not free now (1 transaction blocks it)") {
		t.Fatalf("dry run = %v", plan)
	}
	// Over REST, with the strategy as people type it.
	resp, err := http.Post("http://"+ts.HTTPAddr()+"/v1/services/auth/updates:dryRun", "application/json",
		strings.NewReader(`{"toVersion":"v3","strategy":"cv"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var restPlan pb.UpdatePlan
	if resp.StatusCode != http.StatusOK || decodeProto(t, resp, &restPlan) != nil || restPlan.WouldStart ||
		!strings.Contains(restPlan.Refused, "no connected instance of auth@v3") || restPlan.Strategy != pb.Strategy_STRATEGY_CV {
		t.Fatalf("POST updates:dryRun v3: HTTP %d %v", resp.StatusCode, &restPlan)
	}
	if l, err := ts.Admin.ListUpdates(ctx, &pb.ListUpdatesRequest{}); err != nil || len(l.Updates) != 0 {
		t.Fatalf("a dry run started an update: %v %v", l, err)
	}
	// With an update in progress, the plan is refused and names it.
	u, err := ts.Admin.StartUpdate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if plan, err = ts.Admin.DryRunUpdate(ctx, req); err != nil || plan.WouldStart || plan.InProgress.GetId() != u.Id ||
		!strings.Contains(plan.Refused, "already being updated by "+u.Id) {
		t.Fatalf("dry run during %s: %v %v", u.Id, plan, err)
	}
	if _, err := ts.Admin.DryRunUpdate(ctx, &pb.StartUpdateRequest{Service: "nosuch", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV}); status.Code(err) != codes.NotFound {
		t.Fatalf("dry run of an unknown service: %v", err)
	}
}

// decodeProto reads a REST answer into m.
func decodeProto(t *testing.T, resp *http.Response, m proto.Message) error {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if err := protojson.Unmarshal(b, m); err != nil {
		t.Errorf("decode %s: %v", b, err)
		return err
	}
	return nil
}
