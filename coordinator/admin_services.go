package coordinator

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// The services view (ListServices, GetService): what each service runs now
// (its default version, each version's instances and live transactions),
// whether it is free, the update in progress and the last one that
// finished. It owns nothing: it copies, under the event lock, what the
// engine, the catalog, the session table and the update table hold, in one
// pass over the live transactions at most, and sorts after unlocking.

// Defaults and bounds of the services view.
const (
	defaultServiceLimit  = 100
	maxServiceLimit      = 10000
	defaultInstanceLimit = 100
	maxInstanceLimit     = 10000
	defaultServiceTxns   = 20
	maxServiceTxns       = 1000
)

// serviceDetail says how much of each service to copy: ListServices
// copies counts only, GetService also instances and transaction ids.
type serviceDetail struct {
	instances bool // every instance (the caller trims the list)
	txns      int  // most transaction ids per version; 0: none
}

func (a admin) ListServices(ctx context.Context, req *pb.ListServicesRequest) (*pb.ListServicesResponse, error) {
	n, err := limit(req.GetLimit(), defaultServiceLimit, maxServiceLimit, "limit")
	if err != nil {
		return nil, err
	}
	c := a.c
	c.mu.Lock()
	svcs := make([]graph.ServiceID, 0, c.eng.NumServices())
	for i := range c.eng.ServiceIDBound() {
		if s := graph.ServiceID(i); c.eng.ValidService(s) {
			svcs = append(svcs, s)
		}
	}
	total := len(svcs)
	slices.SortFunc(svcs, func(x, y graph.ServiceID) int { return strings.Compare(c.eng.ServiceName(x), c.eng.ServiceName(y)) })
	states := c.serviceStatesLocked(svcs[:min(n, total)], serviceDetail{})
	c.mu.Unlock()
	for _, st := range states {
		sortServiceState(st)
		if st.LastUpdate != nil {
			st.LastUpdate.History = nil // bounded: GetService has it
		}
	}
	return &pb.ListServicesResponse{Services: states, Total: uint32(total)}, nil
}

func (a admin) GetService(ctx context.Context, req *pb.GetServiceRequest) (*pb.ServiceState, error) {
	if err := storage.ValidName("service", req.GetService()); err != nil {
		return nil, err
	}
	inst, err := limit(req.GetInstanceLimit(), defaultInstanceLimit, maxInstanceLimit, "instance_limit")
	if err != nil {
		return nil, err
	}
	txns, err := limit(req.GetTxnLimit(), defaultServiceTxns, maxServiceTxns, "txn_limit")
	if err != nil {
		return nil, err
	}
	c := a.c
	c.mu.Lock()
	s, ok := c.eng.LookupService(req.Service)
	if !ok {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w %q", ErrUnknownService, req.Service)
	}
	st := c.serviceStatesLocked([]graph.ServiceID{s}, serviceDetail{instances: true, txns: txns})[0]
	c.mu.Unlock()
	sortServiceState(st)
	for _, v := range st.Versions { // the first inst instances, by version then id
		v.InstanceList = v.InstanceList[:min(inst, len(v.InstanceList))]
		inst -= len(v.InstanceList)
	}
	return st, nil
}

// serviceStatesLocked copies the state of svcs, in their order; the event
// lock is held. Transaction ids (detail.txns per version) are the first
// met, as ListTransactions lists them.
func (c *Coordinator) serviceStatesLocked(svcs []graph.ServiceID, detail serviceDetail) []*pb.ServiceState {
	resync := uint32(c.sess.resyncPending())
	out := make([]*pb.ServiceState, len(svcs))
	byID := make(map[graph.ServiceID]*pb.ServiceState, len(svcs))
	byName := make(map[string]*pb.ServiceState, len(svcs))
	used := 0
	for i, s := range svcs {
		st := &pb.ServiceState{
			Name:             c.eng.ServiceName(s),
			Free:             c.eng.Free(s) && resync == 0,
			Blocking:         uint32(c.eng.BlockerCount(s)),
			LiveTransactions: uint32(c.eng.UsedCount(s)),
			ResyncMissing:    resync,
		}
		if c.cat.routed(s) {
			st.DefaultVersion = c.eng.VersionName(c.cat.defaultVersion(s))
			versionOf(st, st.DefaultVersion).Default = true
		}
		for ss := range c.sess.ofService(s) {
			v := versionOf(st, ss.rec.Version)
			v.Instances++
			if ss.stream != nil {
				v.Connected++
			}
			if detail.instances {
				v.InstanceList = append(v.InstanceList, &pb.Instance{InstanceId: ss.rec.InstanceId,
					Address: ss.rec.Address, Connected: ss.stream != nil, RegisteredAt: ss.rec.RegisteredAt})
			}
		}
		if u := c.orch.upd.active(s); u != nil {
			st.Update = c.orch.snapshotLocked(u)
		}
		out[i], byID[s], byName[st.Name] = st, st, st
		used += int(st.LiveTransactions)
	}
	if used > 0 {
		c.eng.ForEachUse(func(id string, uses []graph.Use) bool {
			for _, u := range uses {
				if st := byID[u.Service]; st != nil {
					v := versionOf(st, c.eng.VersionName(u.Version))
					v.LiveTransactions++
					if len(v.Transactions) < detail.txns {
						v.Transactions = append(v.Transactions, id)
					}
				}
			}
			return true
		})
	}
	for u := range c.orch.upd.all() {
		if !u.finished() {
			continue
		}
		for _, m := range recordMembers(u.rec) {
			st := byName[m.Service]
			if st == nil {
				continue
			}
			if last := st.LastUpdate; last == nil || u.rec.FinishedAt.AsTime().After(last.FinishedAt.AsTime()) {
				st.LastUpdate = u.rec // cloned below, once per service
			}
		}
	}
	for _, st := range out {
		if st.LastUpdate != nil {
			st.LastUpdate = proto.Clone(st.LastUpdate).(*pb.Update)
		}
	}
	return out
}

// versionOf returns st's entry for version, adding it if it has none.
func versionOf(st *pb.ServiceState, version string) *pb.VersionState {
	for _, v := range st.Versions {
		if v.Version == version {
			return v
		}
	}
	v := &pb.VersionState{Version: version}
	st.Versions = append(st.Versions, v)
	return v
}

// sortServiceState sorts versions by name, instances by id and
// transaction ids.
func sortServiceState(st *pb.ServiceState) {
	slices.SortFunc(st.Versions, func(a, b *pb.VersionState) int { return strings.Compare(a.Version, b.Version) })
	for _, v := range st.Versions {
		slices.SortFunc(v.InstanceList, func(a, b *pb.Instance) int { return strings.Compare(a.InstanceId, b.InstanceId) })
		slices.Sort(v.Transactions)
	}
}
