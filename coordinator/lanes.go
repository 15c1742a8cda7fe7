package coordinator

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// Lanes (DESIGN.md §4.9). A lane is a named set of service versions and
// the inbound header value that selects it; the coordinator stores the
// lanes, validates them, sends them whole to every sidecar with the
// routing (routing.go), and promotes one through a set update. What a
// lane guarantees is the SDK's: it fixes a transaction's member map at
// its entry and carries it in-band, so the coordinator's only part in a
// running lane transaction is to apply its lane CALLs at the version they
// name without a strategy (stream.go).

// Lane errors.
var (
	// ErrUnknownLane: no lane has the given name.
	ErrUnknownLane = errors.New("unknown lane")
	// ErrLaneExists: a lane of that name exists (or one selected by the
	// same header and tag).
	ErrLaneExists = errors.New("lane exists")
	// ErrTooManyLanes: Config.MaxLanes lanes exist.
	ErrTooManyLanes = errors.New("too many lanes")
	// ErrLanePromoting: the lane is being promoted; it cannot be deleted
	// or promoted again until that update ends.
	ErrLanePromoting = errors.New("lane is being promoted")
)

const (
	// DefaultMaxLanes bounds the lanes when Config.MaxLanes is 0.
	DefaultMaxLanes = 64
	// DefaultLaneHeader is the header that selects a lane that names none.
	DefaultLaneHeader = "x-lane"
	// maxLaneMembers bounds a lane's members (as a set update's).
	maxLaneMembers = maxMembers
	// maxLaneTag bounds a lane's tag and header name.
	maxLaneTag = 64
)

var (
	laneName   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	laneHeader = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
)

// laneTable owns the lanes by name. Its mu is a leaf, taken for every
// read and change; wmu serializes the changes (each validates under the
// event lock, stores without it, then applies), and is taken before the
// event lock, never under it.
type laneTable struct {
	wmu    sync.Mutex
	mu     sync.Mutex
	byName map[string]*pb.Lane
	kick   chan struct{} // settle: a promotion's update may have ended
}

func newLaneTable() *laneTable {
	return &laneTable{byName: make(map[string]*pb.Lane), kick: make(chan struct{}, 1)}
}

// get returns a copy of lane name.
func (t *laneTable) get(name string) (*pb.Lane, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	l, ok := t.byName[name]
	if !ok {
		return nil, false
	}
	return proto.Clone(l).(*pb.Lane), true
}

// idle returns lane name when it exists and no update promotes it: what
// a delete or a promotion needs.
func (t *laneTable) idle(name string) (*pb.Lane, error) {
	l, ok := t.get(name)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownLane, name)
	}
	if l.Promotion != "" {
		return nil, fmt.Errorf("lane %s: %w by update %s", l.Name, ErrLanePromoting, l.Promotion)
	}
	return l, nil
}

// list returns every lane, by name. The lanes are shared: do not change
// them (every change replaces a lane whole).
func (t *laneTable) list() []*pb.Lane {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := slices.Collect(maps.Values(t.byName))
	slices.SortFunc(out, func(a, b *pb.Lane) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

func (t *laneTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byName)
}

// put stores l (replacing the lane of its name); delete removes one.
func (t *laneTable) put(l *pb.Lane) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byName[l.Name] = l
}

func (t *laneTable) delete(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.byName, name)
}

// promoting returns the lanes being promoted.
func (t *laneTable) promoting() []*pb.Lane {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*pb.Lane
	for _, l := range t.byName {
		if l.Promotion != "" {
			out = append(out, l)
		}
	}
	return out
}

// wake asks the settle loop to look at the promotions.
func (t *laneTable) wake() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// normalizeLane fills a lane's defaults (header x-lane, tag its name) and
// sorts its members, after checking what needs no state: a DNS-label name,
// 1 to 16 members each named once, valid names, a header name that is not
// a mesh header and a printable tag.
func normalizeLane(in *pb.Lane) (*pb.Lane, error) {
	if in == nil {
		return nil, fmt.Errorf("%w: lane is required", ErrInvalidArgument)
	}
	l := proto.Clone(in).(*pb.Lane)
	l.Promotion = ""
	if !laneName.MatchString(l.Name) {
		return nil, fmt.Errorf("%w: lane name %q: want 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit", ErrInvalidArgument, l.Name)
	}
	if n := len(l.Members); n == 0 || n > maxLaneMembers {
		return nil, fmt.Errorf("%w: lane %s has %d members, want 1 to %d", ErrInvalidArgument, l.Name, n, maxLaneMembers)
	}
	seen := make(map[string]bool, len(l.Members))
	for _, m := range l.Members {
		if err := errors.Join(storage.ValidName("service", m.GetService()), storage.ValidName("version", m.GetVersion())); err != nil {
			return nil, fmt.Errorf("%w: lane %s: %w", ErrInvalidArgument, l.Name, err)
		}
		if seen[m.Service] {
			return nil, fmt.Errorf("%w: lane %s names service %q twice", ErrInvalidArgument, l.Name, m.Service)
		}
		seen[m.Service] = true
	}
	slices.SortFunc(l.Members, func(a, b *pb.ServiceVersion) int { return cmp.Compare(a.Service, b.Service) })
	if l.Header == "" {
		l.Header = DefaultLaneHeader
	}
	if len(l.Header) > maxLaneTag || !laneHeader.MatchString(l.Header) {
		return nil, fmt.Errorf("%w: lane %s: header %q: want 1 to %d lower-case letters, digits and '-'", ErrInvalidArgument, l.Name, l.Header, maxLaneTag)
	}
	if strings.HasPrefix(l.Header, "x-coordinator-") {
		return nil, fmt.Errorf("%w: lane %s: header %q is a mesh header (x-coordinator-*), which entry points strip", ErrInvalidArgument, l.Name, l.Header)
	}
	if l.Tag == "" {
		l.Tag = l.Name
	}
	if !printable(l.Tag, maxLaneTag) {
		return nil, fmt.Errorf("%w: lane %s: tag %q: want 1 to %d printable ASCII characters", ErrInvalidArgument, l.Name, l.Tag, maxLaneTag)
	}
	return l, nil
}

// printable reports whether s is 1 to max printable ASCII characters, no
// space.
func printable(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// checkLaneMembersLocked checks that every member's service and version
// are known here: the service registered, and the version is its default
// or an instance of it registered. The event lock is held.
func (c *Coordinator) checkLaneMembersLocked(l *pb.Lane) error {
	for _, m := range l.Members {
		if !c.knownServiceLocked(m.Service) {
			return fmt.Errorf("%w: lane %s: service %q is not known to the coordinator (no instance ever registered)", ErrInvalidArgument, l.Name, m.Service)
		}
		if !c.knownVersionLocked(m.Service, m.Version) {
			return fmt.Errorf("%w: lane %s: version %s of service %q is not known to the coordinator (neither its default nor a registered instance's)", ErrInvalidArgument, l.Name, m.Version, m.Service)
		}
	}
	return nil
}

// knownVersionLocked says whether version is service's default or the
// version of one of its sessions.
func (c *Coordinator) knownVersionLocked(service, version string) bool {
	svc, ok := c.eng.LookupService(service)
	if !ok {
		return false
	}
	v, ok := c.eng.LookupVersion(version)
	if !ok {
		return false
	}
	if c.cat.routed(svc) && c.cat.defaultVersion(svc) == v {
		return true
	}
	for s := range c.sess.ofService(svc) {
		if s.ver == v {
			return true
		}
	}
	return false
}

// laneConflict returns the name of a lane other than l selected by the
// same header and tag, "" if none.
func (t *laneTable) laneConflict(l *pb.Lane) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, o := range t.byName {
		if o.Name != l.Name && o.Header == l.Header && o.Tag == l.Tag {
			return o.Name
		}
	}
	return ""
}
