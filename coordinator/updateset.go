package coordinator

import (
	"fmt"
	"slices"
	"strings"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
	"github.com/coordinator/coordinator/strategy"
)

// Set updates (DESIGN.md §4.8). An update moves a set of services together,
// its members: one service for `coordctl update auth --to v2`, several for
// `coordctl update portal=v2 proc=v2`. It has one id, one record and one
// phase history; every transaction runs either entirely on the members'
// old versions or entirely on their new ones. The orchestrator treats a
// member as it treats the service of a one-service update (update mode,
// routes, pins, held calls), and asks the set's questions of the engine:
// freeness of the set (graph.FreeSet), its sides in use
// (graph.AnySetBlockerUsing). A transaction that used one member is on
// that member's side for every other: a call of it to another member goes
// to that member's version on the same side (setVersionLocked); under CV
// the first use of any member is pinned before it is answered, which
// after a failover puts the transaction on its side for the whole set
// (restoredSetPin).

// maxMembers bounds the services of one set update.
const maxMembers = 16

// member is one service of an update's set and its two versions.
type member struct {
	svc              graph.ServiceID
	name             string
	from, to         graph.VersionID
	fromName, toName string
}

// version is the member's version on side t (Old or New).
func (m *member) version(t strategy.Target) graph.VersionID {
	if t == strategy.New {
		return m.to
	}
	return m.from
}

// side is the side of the set a transaction is on that used m at v: New at
// its new version, Old otherwise (its old version, or an older one used
// before the update began).
func (m *member) side(v graph.VersionID) strategy.Target {
	if v == m.to {
		return strategy.New
	}
	return strategy.Old
}

// setMembers sets u's members (and the services they index) from its
// record, interning their names.
func (o *orchestrator) setMembers(u *update) {
	u.members = u.members[:0]
	u.svcs = u.svcs[:0]
	for _, m := range recordMembers(u.rec) {
		u.members = append(u.members, member{svc: o.eng.Service(m.Service), name: m.Service,
			from: o.eng.Version(m.FromVersion), to: o.eng.Version(m.ToVersion),
			fromName: m.FromVersion, toName: m.ToVersion})
		u.svcs = append(u.svcs, u.members[len(u.members)-1].svc)
	}
}

// recordMembers are the members a record names: its members for a set,
// else its one service.
func recordMembers(rec *pb.Update) []*pb.UpdateMember {
	if len(rec.GetMembers()) > 0 {
		return rec.GetMembers()
	}
	return []*pb.UpdateMember{{Service: rec.GetService(), FromVersion: rec.GetFromVersion(), ToVersion: rec.GetToVersion()}}
}

// member returns u's member svc, or nil.
func (u *update) member(svc graph.ServiceID) *member {
	for i := range u.members {
		if u.members[i].svc == svc {
			return &u.members[i]
		}
	}
	return nil
}

// subject names the set: "auth", or "portal+proc".
func (u *update) subject() string {
	if len(u.members) == 0 {
		return u.rec.GetService()
	}
	names := make([]string, len(u.members))
	for i, m := range u.members {
		names[i] = m.name
	}
	return strings.Join(names, "+")
}

// sideUses are the members at their versions on side t: what a
// transaction on that side has used of the set.
func (u *update) sideUses(t strategy.Target) []graph.Use {
	out := make([]graph.Use, len(u.members))
	for i, m := range u.members {
		out[i] = graph.Use{Service: m.svc, Version: m.version(t)}
	}
	return out
}

// sideNames says which versions side t is: "auth@v2", or
// "portal@v2+proc@v2".
func (u *update) sideNames(t strategy.Target) string {
	names := make([]string, len(u.members))
	for i, m := range u.members {
		v := m.fromName
		if t == strategy.New {
			v = m.toName
		}
		names[i] = m.name + "@" + v
	}
	return strings.Join(names, "+")
}

// setVersionLocked returns the version of m a transaction goes to that did
// not use m itself but used another member of the set: m's version on that
// member's side. ok is false if it used no member.
func (o *orchestrator) setVersionLocked(u *update, m *member, txn string) (graph.VersionID, bool) {
	if len(u.members) < 2 {
		return 0, false
	}
	use, ok := o.eng.SetSide(txn, u.svcs)
	if !ok {
		return 0, false
	}
	return m.version(u.member(use.Service).side(use.Version)), true
}

// restoredSetPin returns the version of m a transaction's restored pins
// put it on: its pin at m, else m's version on the side of its pin at
// another member (the first use of any member pins the whole set).
func (o *orchestrator) restoredSetPin(u *update, m *member, txn string) (graph.VersionID, bool) {
	if v, ok := o.upd.restoredPin(m.svc, txn); ok {
		return v, true
	}
	for i := range u.members {
		other := &u.members[i]
		if other.svc == m.svc {
			continue
		}
		if v, ok := o.upd.restoredPin(other.svc, txn); ok {
			return m.version(other.side(v)), true
		}
	}
	return 0, false
}

// pendingSetPinLocked returns a pin of txn at a member of u still being
// committed: an answer to a call of txn to the set relies on it (it says
// which side txn is on) and must not be sent before it is durable.
func (o *orchestrator) pendingSetPinLocked(u *update, txn string) *storage.Op {
	for _, m := range u.members {
		if p := o.pendingPins[pinKey(m.name, txn)]; p != nil {
			return p
		}
	}
	return nil
}

// requestMembers reads the set a StartUpdateRequest asks for: its members,
// or its one service and version. Each service may appear once.
func requestMembers(req *pb.StartUpdateRequest) ([]*pb.ServiceVersion, error) {
	ms := req.GetMembers()
	if len(ms) == 0 {
		if err := storage.ValidName("service", req.GetService()); err != nil {
			return nil, err
		}
		if err := storage.ValidName("to_version", req.GetToVersion()); err != nil {
			return nil, err
		}
		return []*pb.ServiceVersion{{Service: req.GetService(), Version: req.GetToVersion()}}, nil
	}
	if req.GetToVersion() != "" {
		return nil, fmt.Errorf("%w: give either service and to_version, or members (each with its version), not both", ErrInvalidArgument)
	}
	if svc := req.GetService(); svc != "" && !slices.ContainsFunc(ms, func(m *pb.ServiceVersion) bool { return m.GetService() == svc }) {
		return nil, fmt.Errorf("%w: service %q is not one of members: with members, service is unset or names one of them", ErrInvalidArgument, svc)
	}
	if len(ms) > maxMembers {
		return nil, fmt.Errorf("%w: %d members, at most %d", ErrInvalidArgument, len(ms), maxMembers)
	}
	seen := make(map[string]bool, len(ms))
	for i, m := range ms {
		if err := storage.ValidName(fmt.Sprintf("members[%d].service", i), m.GetService()); err != nil {
			return nil, err
		}
		if err := storage.ValidName(fmt.Sprintf("members[%d].version", i), m.GetVersion()); err != nil {
			return nil, err
		}
		if seen[m.GetService()] {
			return nil, fmt.Errorf("%w: service %q is twice in members: a set names each service once", ErrInvalidArgument, m.GetService())
		}
		seen[m.GetService()] = true
	}
	return ms, nil
}
