package main

import (
	"slices"
	"testing"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The tracker reads the defaults a client holds from scoped snapshots and
// deltas: a delta keeps what it does not name, removes what it removes; a
// snapshot replaces everything; an ack makes its revision's view current.
func TestTrackerAppliesDeltas(t *testing.T) {
	tr := newTracker(&routingStats{}, "a", "b")
	route := func(svc, def string) *pb.ServiceRoute { return &pb.ServiceRoute{Service: svc, DefaultVersion: def} }
	steps := []struct {
		msg  *pb.Routing
		want []string
	}{
		{&pb.Routing{Revision: 1, Services: []*pb.ServiceRoute{route("a", "v1"), route("b", "v1")}}, []string{"v1", "v1"}},
		{&pb.Routing{Revision: 2, Delta: true, Services: []*pb.ServiceRoute{route("a", "v2")}}, []string{"v2", "v1"}},
		{&pb.Routing{Revision: 3, Delta: true, Removed: []string{"b"}}, []string{"v2", ""}},
		{&pb.Routing{Revision: 4, Services: []*pb.ServiceRoute{route("b", "v3")}}, []string{"", "v3"}},
	}
	for _, s := range steps {
		tr.received(s.msg)
		tr.sentAck(s.msg.Revision)
		if got := tr.defaults(); !slices.Equal(got, s.want) {
			t.Fatalf("after revision %d (delta %v): defaults %q, want %q", s.msg.Revision, s.msg.Delta, got, s.want)
		}
	}
	if !tr.updateModeAckedAt().IsZero() {
		t.Fatal("update mode acknowledged, but no revision set it")
	}
	// A delta that puts b in update mode: acknowledged when its ack is sent.
	tr.received(&pb.Routing{Revision: 5, Delta: true, Services: []*pb.ServiceRoute{{Service: "b", DefaultVersion: "v3", UpdateMode: true}}})
	if !tr.updateModeAckedAt().IsZero() {
		t.Fatal("update mode acknowledged before the ack was sent")
	}
	tr.sentAck(5)
	if tr.updateModeAckedAt().IsZero() {
		t.Fatal("the ack of the revision that set update mode was not seen")
	}
}
