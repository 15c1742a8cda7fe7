package sidecar

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Lanes (DESIGN.md §4.9). A lane is a named set of service versions that
// a request selects by a header of its own (x-lane: gray). When this
// client begins a root transaction for a request that carries a lane's
// header and tag, it fixes the transaction's lane: the name and the member
// map as its routing table has it at that moment (a snapshot). The
// snapshot travels with the transaction in the mesh header HeaderLane, so
// that every hop routes by the same map: a call to a member goes to the
// lane's version, in every phase of any update of that service, with no
// round trip; other calls follow the defaults (baseline fallback). A lane
// edit, delete or promotion never changes a running transaction's
// versions. A lane version with no endpoint fails the call
// (ErrNoLaneEndpoint): it never silently leaves its lane.

// HeaderLane carries a transaction's lane snapshot between services:
// "name;service=version,service=version", members sorted by service. It
// is a mesh header: entry points strip it (an outsider can only send a
// lane's tag, never a member map).
const HeaderLane = "x-coordinator-lane"

// ErrNoLaneEndpoint: a lane call's version of the callee has no endpoint;
// the call fails rather than leave its lane. It wraps ErrNoEndpoint.
var ErrNoLaneEndpoint = fmt.Errorf("%w in the transaction's lane", ErrNoEndpoint)

const (
	// maxLaneMembers bounds a lane's members (as the coordinator does).
	maxLaneMembers = 16
	// maxLaneHeader bounds HeaderLane's length.
	maxLaneHeader = 2048
)

// lane is a transaction's lane snapshot: immutable once made.
type lane struct {
	name    string
	members map[string]string // service -> version
	header  string            // as HeaderLane carries it
}

// laneDef is a lane of the routing table: what selects it and its members.
type laneDef struct {
	header, tag string
	snap        *lane
}

// laneIndex is the lanes of a table: in name order, and by header and tag
// for the entry's lookup (one header read per distinct header, however
// many lanes).
type laneIndex struct {
	defs  []laneDef
	byTag map[string]map[string]*lane // header -> tag -> lane
}

func newLaneIndex(defs []laneDef) laneIndex {
	ix := laneIndex{defs: defs}
	if len(defs) > 0 {
		ix.byTag = make(map[string]map[string]*lane)
	}
	for _, d := range defs {
		m := ix.byTag[d.header]
		if m == nil {
			m = make(map[string]*lane)
			ix.byTag[d.header] = m
		}
		if _, dup := m[d.tag]; !dup { // the first by name
			m[d.tag] = d.snap
		}
	}
	return ix
}

// newLaneDefs indexes the lanes of a Routing, in name order. A lane with a
// malformed member is left out.
func newLaneDefs(ls []*pb.Lane) []laneDef {
	out := make([]laneDef, 0, len(ls))
	for _, l := range ls {
		members := make(map[string]string, len(l.GetMembers()))
		for _, m := range l.GetMembers() {
			members[m.GetService()] = m.GetVersion()
		}
		snap, err := makeLane(l.GetName(), members)
		if err != nil || l.GetHeader() == "" || l.GetTag() == "" {
			continue
		}
		out = append(out, laneDef{header: strings.ToLower(l.GetHeader()), tag: l.GetTag(), snap: snap})
	}
	slices.SortFunc(out, func(a, b laneDef) int { return strings.Compare(a.snap.name, b.snap.name) })
	return out
}

// makeLane checks a lane and encodes its header value.
func makeLane(name string, members map[string]string) (*lane, error) {
	if !validLaneName(name) {
		return nil, fmt.Errorf("lane name %q", name)
	}
	if len(members) == 0 || len(members) > maxLaneMembers {
		return nil, fmt.Errorf("lane %s: %d members, want 1 to %d", name, len(members), maxLaneMembers)
	}
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte(';')
	for i, svc := range slices.Sorted(maps.Keys(members)) {
		v := members[svc]
		if !laneToken(svc) || !laneToken(v) {
			return nil, fmt.Errorf("lane %s: member %q=%q", name, svc, v)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(svc + "=" + v)
	}
	if b.Len() > maxLaneHeader {
		return nil, fmt.Errorf("lane %s: %d bytes encoded, more than %d", name, b.Len(), maxLaneHeader)
	}
	return &lane{name: name, members: members, header: b.String()}, nil
}

// parseLaneHeader parses HeaderLane strictly: a lane name, ';', then 1 to
// 16 service=version pairs separated by ',', each service once, at most
// maxLaneHeader bytes in all. Anything else is an error (the caller treats
// the transaction as in no lane, and counts it).
func parseLaneHeader(v string) (*lane, error) {
	if len(v) > maxLaneHeader {
		return nil, fmt.Errorf("%d bytes, more than %d", len(v), maxLaneHeader)
	}
	name, rest, ok := strings.Cut(v, ";")
	if !ok {
		return nil, errors.New("no ';' after the lane name")
	}
	if rest == "" {
		return nil, errors.New("no members")
	}
	pairs := strings.Split(rest, ",")
	if len(pairs) > maxLaneMembers {
		return nil, fmt.Errorf("%d members, more than %d", len(pairs), maxLaneMembers)
	}
	members := make(map[string]string, len(pairs))
	for _, p := range pairs {
		svc, ver, ok := strings.Cut(p, "=")
		if !ok || !laneToken(svc) || !laneToken(ver) {
			return nil, fmt.Errorf("member %q: want service=version", p)
		}
		if _, dup := members[svc]; dup {
			return nil, fmt.Errorf("service %q named twice", svc)
		}
		members[svc] = ver
	}
	l, err := makeLane(name, members)
	if err != nil {
		return nil, err
	}
	if l.header != v {
		return nil, errors.New("members not in service order")
	}
	return l, nil
}

// validLaneName: 1 to 63 lower-case letters, digits and '-', starting and
// ending with a letter or digit (the coordinator's rule).
func validLaneName(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// laneToken: a service or version name in HeaderLane: 1 to 253 printable
// ASCII characters other than the separators ';', ',' and '='.
func laneToken(s string) bool {
	if !isPrintable(s, 253) {
		return false
	}
	return !strings.ContainsAny(s, ";,=")
}

// matchLane returns the lane an inbound request selects by its headers
// (get returns the first value of a lower-case name): the first lane, by
// name, whose header has its tag. nil if none.
func (t *table) matchLane(get func(string) string) *lane {
	if t == nil {
		return nil
	}
	var found *lane
	for h, tags := range t.lanes.byTag {
		v := get(h)
		if v == "" {
			continue
		}
		if l := tags[v]; l != nil && (found == nil || l.name < found.name) {
			found = l
		}
	}
	return found
}

// laneNamed returns the current table's lane name (NaiveLanes).
func (t *table) laneNamed(name string) *lane {
	if t == nil {
		return nil
	}
	for _, d := range t.lanes.defs {
		if d.snap.name == name {
			return d.snap
		}
	}
	return nil
}

// Lane returns the transaction's lane and its member map (a copy) as fixed
// at its entry; "" and nil if it runs in no lane.
func (t Txn) Lane() (string, map[string]string) {
	if t.lane == nil {
		return "", nil
	}
	m := make(map[string]string, len(t.lane.members))
	for k, v := range t.lane.members {
		m[k] = v
	}
	return t.lane.name, m
}

// LaneHeader is HeaderLane's value for the transaction's lane, "" if it
// runs in no lane: for a proxy that hands the mesh headers to an
// application (coordsidecar).
func (t Txn) LaneHeader() string {
	if t.lane == nil {
		return ""
	}
	return t.lane.header
}

// laneVersion returns the version a call of t to service must run on in
// t's lane: from the snapshot t carries, or (Config.NaiveLanes) from the
// lane of that name in the current table. ok is false outside the lane.
func (c *Client) laneVersion(t Txn, tab *table, service string) (name, version string, ok bool) {
	l := t.lane
	if l == nil {
		return "", "", false
	}
	if c.cfg.NaiveLanes {
		if l = tab.laneNamed(l.name); l == nil {
			return "", "", false
		}
	}
	v, ok := l.members[service]
	return l.name, v, ok
}

// BeginFrom begins a root transaction, as Begin does, for a request from
// outside the mesh whose headers get reads (lower-case names): a request
// that carries a lane's header and tag runs in that lane, its member map
// fixed now. The mesh headers are not read: Middleware and the server
// interceptors join an inbound call that carries them.
func (c *Client) BeginFrom(ctx context.Context, get func(string) string) (context.Context, Txn) {
	t, _ := fromHeaders(func(h string) string {
		if h == HeaderTxn || h == HeaderSub {
			return ""
		}
		return get(h)
	})
	return c.begin(ctx, t, get)
}

// JoinFrom joins the transaction an inbound call's headers (get, lower-case
// names) carry, as Middleware does: its mesh headers name the transaction
// and the sub-transaction its caller created, and its lane if any. ok is
// false if they name none (the call is an entry: use BeginFrom).
func (c *Client) JoinFrom(ctx context.Context, get func(string) string) (context.Context, bool) {
	t, joined := fromHeaders(get)
	if !joined {
		return ctx, false
	}
	t.c = c
	t.lane = c.inboundLane(get)
	return withTxn(ctx, t), true
}

// inboundLane parses an inbound call's HeaderLane; a malformed one is
// treated as absent, logged and counted (Stats.BadLaneHeaders).
func (c *Client) inboundLane(get func(string) string) *lane {
	v := get(HeaderLane)
	if v == "" {
		return nil
	}
	l, err := parseLaneHeader(v)
	if err != nil {
		c.stats.badLanes.Add(1)
		c.lg.Warn("malformed lane header ignored: the call runs in no lane", "header", HeaderLane, "err", err)
		return nil
	}
	return l
}
