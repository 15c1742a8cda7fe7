package coordinator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func sv(svc, ver string) *pb.ServiceVersion { return &pb.ServiceVersion{Service: svc, Version: ver} }

// A lane is checked before anything is stored: its name, its members (1
// to 16, each once, each service and version known to the coordinator),
// its header (not a mesh header) and tag; each refusal is InvalidArgument
// naming what was wrong. A second lane of a name, or selected by the same
// header and tag, is AlreadyExists; one past MaxLanes ResourceExhausted;
// an unknown one NotFound.
func TestLaneValidation(t *testing.T) {
	m := startMem(t, func(c *coordinator.Config) { c.MaxLanes = 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m.Sidecar("p-1", "portal", "v1", "auth")
	m.Sidecar("a-1", "auth", "v1")
	m.Sidecar("a-2", "auth", "v2")
	many := make([]*pb.ServiceVersion, 17)
	for i := range many {
		many[i] = sv("s"+strings.Repeat("x", i+1), "v1")
	}
	for _, tc := range []struct {
		lane *pb.Lane
		want string
	}{
		{nil, "lane is required"},
		{&pb.Lane{Name: "Gray", Members: []*pb.ServiceVersion{sv("auth", "v2")}}, `lane name "Gray"`},
		{&pb.Lane{Name: "gray-", Members: []*pb.ServiceVersion{sv("auth", "v2")}}, `lane name "gray-"`},
		{&pb.Lane{Name: "gray"}, "0 members"},
		{&pb.Lane{Name: "gray", Members: many}, "17 members"},
		{&pb.Lane{Name: "gray", Members: []*pb.ServiceVersion{sv("auth", "v2"), sv("auth", "v1")}}, `names service "auth" twice`},
		{&pb.Lane{Name: "gray", Members: []*pb.ServiceVersion{sv("proc", "v2")}}, `service "proc" is not known`},
		{&pb.Lane{Name: "gray", Members: []*pb.ServiceVersion{sv("auth", "v9")}}, `version v9 of service "auth" is not known`},
		{&pb.Lane{Name: "gray", Members: []*pb.ServiceVersion{sv("auth", "v2")}, Header: "x-coordinator-lane"}, "is a mesh header"},
		{&pb.Lane{Name: "gray", Members: []*pb.ServiceVersion{sv("auth", "v2")}, Header: "X Lane"}, `header "X Lane"`},
		{&pb.Lane{Name: "gray", Members: []*pb.ServiceVersion{sv("auth", "v2")}, Tag: "a b"}, `tag "a b"`},
	} {
		_, err := m.Admin.CreateLane(ctx, &pb.CreateLaneRequest{Lane: tc.lane})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CreateLane(%v) = %v, want InvalidArgument with %q", tc.lane, err, tc.want)
		}
	}
	got, err := m.Admin.CreateLane(ctx, &pb.CreateLaneRequest{Lane: &pb.Lane{Name: "gray", Members: []*pb.ServiceVersion{sv("portal", "v1"), sv("auth", "v2")}}})
	if err != nil {
		t.Fatal(err)
	}
	want := &pb.Lane{Name: "gray", Members: []*pb.ServiceVersion{sv("auth", "v2"), sv("portal", "v1")}, Header: "x-lane", Tag: "gray"}
	if !proto.Equal(got, want) {
		t.Errorf("created %v, want %v (defaults filled, members sorted)", got, want)
	}
	for _, tc := range []struct {
		lane *pb.Lane
		code codes.Code
		want string
	}{
		{&pb.Lane{Name: "gray", Members: []*pb.ServiceVersion{sv("auth", "v1")}}, codes.AlreadyExists, "lane gray"},
		{&pb.Lane{Name: "blue", Members: []*pb.ServiceVersion{sv("auth", "v1")}, Tag: "gray"}, codes.AlreadyExists, "selected by x-lane: gray"},
	} {
		if _, err := m.Admin.CreateLane(ctx, &pb.CreateLaneRequest{Lane: tc.lane}); status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CreateLane(%v) = %v, want %v with %q", tc.lane, err, tc.code, tc.want)
		}
	}
	if _, err := m.Admin.CreateLane(ctx, &pb.CreateLaneRequest{Lane: &pb.Lane{Name: "blue", Members: []*pb.ServiceVersion{sv("auth", "v1")}}}); err != nil {
		t.Fatal(err)
	}
	_, err = m.Admin.CreateLane(ctx, &pb.CreateLaneRequest{Lane: &pb.Lane{Name: "red", Members: []*pb.ServiceVersion{sv("auth", "v1")}}})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "the limit is 2") {
		t.Errorf("a third lane with MaxLanes 2: %v, want ResourceExhausted naming the limit", err)
	}
	if _, err := m.Admin.DeleteLane(ctx, &pb.DeleteLaneRequest{Name: "red"}); status.Code(err) != codes.NotFound {
		t.Errorf("delete an unknown lane: %v, want NotFound", err)
	}
	if _, err := m.Admin.PromoteLane(ctx, &pb.PromoteLaneRequest{Name: "red", Strategy: pb.Strategy_STRATEGY_CV}); status.Code(err) != codes.NotFound {
		t.Errorf("promote an unknown lane: %v, want NotFound", err)
	}
	if _, err := m.Admin.PromoteLane(ctx, &pb.PromoteLaneRequest{Name: "blue", Strategy: pb.Strategy_STRATEGY_CV}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("promote a lane whose members run their lane versions by default: %v, want FailedPrecondition", err)
	}
	l, err := m.Admin.ListLanes(ctx, &pb.ListLanesRequest{})
	if err != nil || len(l.Lanes) != 2 || l.Lanes[0].Name != "blue" || l.Lanes[1].Name != "gray" {
		t.Errorf("ListLanes = %v %v, want blue and gray", l, err)
	}
}

// Every stream gets the lanes whole: in its snapshot, and in a delta each
// time any lane changes (created, deleted), whatever its scope.
func TestLanesReachEverySidecar(t *testing.T) {
	m := startMem(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	portal := m.Sidecar("p-1", "portal", "v1", "auth")
	auth := m.Sidecar("a-1", "auth", "v1") // calls nothing: an empty scope
	m.Sidecar("a-2", "auth", "v2")
	lanesAre := func(sc *simsidecar.Sidecar, names ...string) func(*pb.Routing) bool {
		return func(r *pb.Routing) bool {
			if len(r.GetLanes()) != len(names) {
				return false
			}
			for i, l := range r.GetLanes() {
				if l.Name != names[i] {
					return false
				}
			}
			return true
		}
	}
	for _, name := range []string{"gray", "blue"} {
		if _, err := m.Admin.CreateLane(ctx, &pb.CreateLaneRequest{Lane: &pb.Lane{Name: name, Members: []*pb.ServiceVersion{sv("auth", "v2")}, Tag: name}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, sc := range []*simsidecar.Sidecar{portal, auth} {
		if err := sc.WaitRouting(ctx, lanesAre(sc, "blue", "gray")); err != nil {
			t.Fatalf("lanes not sent: %v (table %v)", err, sc.Routing())
		}
	}
	late := m.Sidecar("p-2", "portal", "v1", "auth")
	// Nothing changed since: only its snapshot can bring the lanes.
	if err := late.WaitRouting(ctx, lanesAre(late, "blue", "gray")); err != nil {
		t.Errorf("the snapshot of a sidecar that registered later: %v (table %v)", err, late.Routing())
	}
	if _, err := m.Admin.DeleteLane(ctx, &pb.DeleteLaneRequest{Name: "gray"}); err != nil {
		t.Fatal(err)
	}
	for _, sc := range []*simsidecar.Sidecar{portal, auth, late} {
		if err := sc.WaitRouting(ctx, lanesAre(sc, "blue")); err != nil {
			t.Fatalf("lane deletion not sent: %v (table %v)", err, sc.Routing())
		}
	}
}

// A lane CALL is applied at the version it names without asking the
// update's strategy: while auth is being updated by BF (a call of a
// transaction new to auth would be held), a waiting lane call is answered
// at once with its lane version, and the update's pins and holds count
// nothing of it. A lane CALL with no version is refused.
func TestLaneCallBypassesTheStrategy(t *testing.T) {
	m := startMem(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	portal := m.Sidecar("p-1", "portal", "v1", "auth")
	m.Sidecar("a-1", "auth", "v1")
	m.Sidecar("a-2", "auth", "v2")
	m.Sidecar("a-3", "auth", "v3")
	// A transaction that used auth@v1 and may call it again keeps auth
	// from being free: BF holds the calls of those new to auth.
	blocker := "4bf92f3577b34da6a3ce929d0e0e0001"
	if _, err := portal.Send(ctx, &pb.Event{Seq: 1, Type: pb.EventType_EVENT_TYPE_BEGIN, TxnId: blocker, SubId: 1},
		&pb.Event{Seq: 2, Type: pb.EventType_EVENT_TYPE_CALL, TxnId: blocker, SubId: 2, CallerSubId: 1, Service: "auth", Version: "v1"},
		&pb.Event{Seq: 3, Type: pb.EventType_EVENT_TYPE_RETURN, TxnId: blocker, SubId: 2}); err != nil {
		t.Fatal(err)
	}
	u, err := m.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "auth", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_BF,
		MaxBlock: nil})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		g, err := m.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		if err == nil && g.Phase == pb.Phase_PHASE_WAITING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("update not WAITING: %v %v", g, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	lane := "4bf92f3577b34da6a3ce929d0e0e0002"
	if _, err := portal.Send(ctx, &pb.Event{Seq: 4, Type: pb.EventType_EVENT_TYPE_BEGIN, TxnId: lane, SubId: 1, Lane: "gray"}); err != nil {
		t.Fatal(err)
	}
	dec, _, err := portal.SendWait(&pb.Event{Seq: 5, Type: pb.EventType_EVENT_TYPE_CALL, TxnId: lane, SubId: 2, CallerSubId: 1,
		Service: "auth", Version: "v3", Lane: "gray", Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-dec:
		if d.GetVersion() != "v3" || d.GetError() != "" {
			t.Errorf("lane call decided %v, want v3", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("a lane call was held by BF")
	}
	g, err := m.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
	if err != nil {
		t.Fatal(err)
	}
	if p := g.GetProgress(); p.GetHeldCalls() != 0 || p.GetPinnedCalls() != 0 {
		t.Errorf("update progress %v: the lane call counts as held or pinned", p)
	}
	ack, err := portal.Send(ctx, &pb.Event{Seq: 6, Type: pb.EventType_EVENT_TYPE_CALL, TxnId: lane, SubId: 3, CallerSubId: 1,
		Service: "auth", Lane: "gray"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ack.Errors) != 1 || codes.Code(ack.Errors[0].Code) != codes.InvalidArgument || !strings.Contains(ack.Errors[0].Message, "lane") {
		t.Errorf("a lane CALL with no version: %v, want InvalidArgument", ack.Errors)
	}
}

// A lane being promoted cannot be deleted or promoted again; when its
// update ends otherwise than DONE (here: aborted) the lane stays, no
// longer promoting; a promotion that is DONE deletes it.
func TestLanePromotionEnds(t *testing.T) {
	m := startMem(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	portal := m.Sidecar("p-1", "portal", "v1", "auth")
	m.Sidecar("a-1", "auth", "v1")
	m.Sidecar("a-2", "auth", "v2")
	// A transaction that used auth@v1 and may call it again: WF waits.
	blocker := "4bf92f3577b34da6a3ce929d0e0e0001"
	if _, err := portal.Send(ctx, &pb.Event{Seq: 1, Type: pb.EventType_EVENT_TYPE_BEGIN, TxnId: blocker, SubId: 1},
		&pb.Event{Seq: 2, Type: pb.EventType_EVENT_TYPE_CALL, TxnId: blocker, SubId: 2, CallerSubId: 1, Service: "auth", Version: "v1"},
		&pb.Event{Seq: 3, Type: pb.EventType_EVENT_TYPE_RETURN, TxnId: blocker, SubId: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Admin.CreateLane(ctx, &pb.CreateLaneRequest{Lane: &pb.Lane{Name: "gray", Members: []*pb.ServiceVersion{sv("auth", "v2")}}}); err != nil {
		t.Fatal(err)
	}
	u, err := m.Admin.PromoteLane(ctx, &pb.PromoteLaneRequest{Name: "gray", Strategy: pb.Strategy_STRATEGY_WF})
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Members) != 0 || u.Service != "auth" || u.ToVersion != "v2" {
		t.Errorf("promotion %v: want an update of auth to v2", u)
	}
	l, err := m.Admin.ListLanes(ctx, &pb.ListLanesRequest{})
	if err != nil || len(l.Lanes) != 1 || l.Lanes[0].Promotion != u.Id {
		t.Fatalf("ListLanes during the promotion: %v %v, want gray promoted by %s", l, err, u.Id)
	}
	if _, err := m.Admin.DeleteLane(ctx, &pb.DeleteLaneRequest{Name: "gray"}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), u.Id) {
		t.Errorf("delete a lane being promoted: %v, want FailedPrecondition naming %s", err, u.Id)
	}
	if _, err := m.Admin.PromoteLane(ctx, &pb.PromoteLaneRequest{Name: "gray", Strategy: pb.Strategy_STRATEGY_WF}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("promote a lane twice: %v, want FailedPrecondition", err)
	}
	if _, err := m.Admin.AbortUpdate(ctx, &pb.AbortUpdateRequest{Id: u.Id}); err != nil {
		t.Fatal(err)
	}
	waitLanes(t, m, "the aborted promotion to be forgotten", func(l *pb.ListLanesResponse) bool {
		return len(l.Lanes) == 1 && l.Lanes[0].Promotion == ""
	})
	// Promoted again with nothing in the way: DONE, and the lane goes.
	if _, err := portal.Send(ctx, &pb.Event{Seq: 4, Type: pb.EventType_EVENT_TYPE_END, TxnId: blocker}); err != nil {
		t.Fatal(err)
	}
	u, err = m.Admin.PromoteLane(ctx, &pb.PromoteLaneRequest{Name: "gray", Strategy: pb.Strategy_STRATEGY_WF})
	if err != nil {
		t.Fatal(err)
	}
	waitLanes(t, m, "the promoted lane to be deleted", func(l *pb.ListLanesResponse) bool { return len(l.Lanes) == 0 })
	if g, err := m.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id}); err != nil || g.Phase != pb.Phase_PHASE_DONE {
		t.Errorf("promotion %v %v, want DONE", g, err)
	}
}

func waitLanes(t *testing.T, m *memServer, what string, cond func(*pb.ListLanesResponse) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := m.Admin.ListLanes(context.Background(), &pb.ListLanesRequest{})
		if err == nil && cond(l) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: lanes %v %v", what, l, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
