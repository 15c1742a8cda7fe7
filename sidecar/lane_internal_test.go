package sidecar

import (
	"maps"
	"strings"
	"testing"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The lane header is parsed strictly: what a well-behaved SDK writes
// round-trips; anything else (bad name, separators, duplicates, order,
// too many members, too long) is refused, and the caller runs the call in
// no lane.
func TestParseLaneHeader(t *testing.T) {
	l, err := parseLaneHeader("gray;auth=v2,proc=v2")
	if err != nil || l.name != "gray" || !maps.Equal(l.members, map[string]string{"auth": "v2", "proc": "v2"}) {
		t.Fatalf("parse = %+v, %v", l, err)
	}
	many := make([]string, 17)
	for i := range many {
		many[i] = "s" + string(rune('a'+i)) + "=v1"
	}
	for _, bad := range []string{
		"",
		"gray",                            // no ';'
		"gray;",                           // no members
		"Gray;auth=v2",                    // name not a lane name
		"-gray;auth=v2",                   // name starts with '-'
		"gray;auth",                       // no '='
		"gray;auth=",                      // empty version
		"gray;=v2",                        // empty service
		"gray;auth=v2,auth=v3",            // service twice
		"gray;proc=v2,auth=v2",            // not in service order
		"gray;auth=v 2",                   // space
		"gray;auth=v2,",                   // trailing ','
		"gray;auth=v2;proc=v2",            // ';' in a version
		"gray;" + strings.Join(many, ","), // 17 members
		"gray;auth=" + strings.Repeat("v", maxLaneHeader), // too long
	} {
		if l, err := parseLaneHeader(bad); err == nil {
			t.Errorf("parseLaneHeader(%.60q) = %+v, want an error", bad, l)
		}
	}
	sixteen := many[:16]
	if _, err := parseLaneHeader("gray;" + strings.Join(sixteen, ",")); err != nil {
		t.Errorf("16 members: %v", err)
	}
}

// A lane snapshot's header is what parseLaneHeader reads back.
func TestLaneHeaderRoundTrip(t *testing.T) {
	l, err := makeLane("blue-2", map[string]string{"proc": "v3", "auth": "v2", "db": "2024.1"})
	if err != nil {
		t.Fatal(err)
	}
	if l.header != "blue-2;auth=v2,db=2024.1,proc=v3" {
		t.Errorf("header %q", l.header)
	}
	back, err := parseLaneHeader(l.header)
	if err != nil || back.name != l.name || !maps.Equal(back.members, l.members) {
		t.Errorf("round trip: %+v %v", back, err)
	}
}

// A request selects the first lane, by name, whose header has its tag;
// the table keeps its lanes across a delta that does not change them and
// takes the new list from one that does.
func TestMatchLaneAndDeltas(t *testing.T) {
	lanes := []*pb.Lane{
		{Name: "gray", Header: "x-lane", Tag: "gray", Members: []*pb.ServiceVersion{{Service: "auth", Version: "v2"}}},
		{Name: "blue", Header: "x-env", Tag: "b", Members: []*pb.ServiceVersion{{Service: "proc", Version: "v3"}}},
	}
	tab := newTable(nil, &pb.Routing{Revision: 1, Lanes: lanes, LanesChanged: true})
	hdr := map[string]string{"x-lane": "gray"}
	if l := tab.matchLane(func(h string) string { return hdr[h] }); l == nil || l.name != "gray" {
		t.Fatalf("match x-lane: gray = %+v", l)
	}
	hdr = map[string]string{"x-lane": "blue", "x-env": "b"}
	if l := tab.matchLane(func(h string) string { return hdr[h] }); l == nil || l.name != "blue" {
		t.Fatalf("match x-env: b = %+v", l)
	}
	// Two lanes matched by one request: the first by name.
	hdr = map[string]string{"x-lane": "gray", "x-env": "b"}
	if l := tab.matchLane(func(h string) string { return hdr[h] }); l == nil || l.name != "blue" {
		t.Fatalf("match both = %+v, want blue (first by name)", l)
	}
	if l := tab.matchLane(func(string) string { return "" }); l != nil {
		t.Fatalf("no header matched %+v", l)
	}
	tab = newTable(tab, &pb.Routing{Revision: 2, Delta: true})
	if len(tab.lanes.defs) != 2 {
		t.Fatalf("a delta without lanes_changed dropped lanes: %d", len(tab.lanes.defs))
	}
	tab = newTable(tab, &pb.Routing{Revision: 3, Delta: true, LanesChanged: true, Lanes: lanes[:1]})
	if len(tab.lanes.defs) != 1 || tab.laneNamed("blue") != nil || tab.laneNamed("gray") == nil {
		t.Fatalf("a delta with lanes_changed: %+v", tab.lanes)
	}
	tab = newTable(tab, &pb.Routing{Revision: 4, Delta: true, LanesChanged: true})
	if len(tab.lanes.defs) != 0 {
		t.Fatalf("every lane deleted, %d left", len(tab.lanes.defs))
	}
}
