package coordinator

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// Defaults and bounds of admin listings.
const (
	defaultBlockerLimit = 20
	maxBlockerLimit     = 1000
	defaultGraphTxns    = 10
	maxGraphTxns        = 1000
	defaultTxnLimit     = 100
	maxTxnLimit         = 10000
)

func limit(v uint32, def, max int, field string) (int, error) {
	switch {
	case v == 0:
		return def, nil
	case int(v) > max:
		return 0, fmt.Errorf("%w: %s %d is more than %d", ErrInvalidArgument, field, v, max)
	}
	return int(v), nil
}

func (a admin) GetFreeness(ctx context.Context, req *pb.GetFreenessRequest) (*pb.Freeness, error) {
	if err := storage.ValidName("service", req.GetService()); err != nil {
		return nil, err
	}
	n, err := limit(req.GetLimit(), defaultBlockerLimit, maxBlockerLimit, "limit")
	if err != nil {
		return nil, err
	}
	start := time.Now()
	c := a.c
	c.mu.Lock()
	defer c.mu.Unlock()
	defer func() { c.metrics.freenessSeconds.Observe(time.Since(start).Seconds()) }()
	s, ok := c.eng.LookupService(req.Service)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownService, req.Service)
	}
	out := &pb.Freeness{Service: req.Service, Free: c.eng.Free(s), Blocking: uint32(c.eng.BlockerCount(s))}
	for _, b := range c.eng.Blockers(s, n) {
		out.Blockers = append(out.Blockers, c.blockerLocked(s, b))
	}
	if m := c.sess.resyncPending(); m > 0 {
		// After a failover, what the missing sidecars run is not known
		// yet: not free, and say who is missing.
		out.Free, out.ResyncMissing = false, uint32(m)
		out.ResyncSessions = c.resyncSessionsLocked(n)
	}
	return out, nil
}

// resyncSessionsLocked lists up to n of the sessions a failover still
// waits for, sorted.
func (c *Coordinator) resyncSessionsLocked(n int) []string {
	ids := make([]string, 0, c.sess.resyncPending())
	for id := range c.sess.resyncPendingIDs() {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if len(ids) > n {
		ids = ids[:n]
	}
	return ids
}

func (c *Coordinator) blockerLocked(s graph.ServiceID, b graph.Blocker) *pb.Blocker {
	name := c.eng.ServiceName(s)
	out := &pb.Blocker{TxnId: b.Txn, Running: b.Running, Legacy: b.Legacy}
	if b.PastVersion != 0 {
		out.PastVersion = c.eng.VersionName(b.PastVersion)
	}
	if b.FutureViaOK {
		out.FutureVia = c.eng.ServiceName(b.FutureVia)
	}
	switch {
	case b.Legacy:
		out.Reason = "legacy transaction (restored, not seen starting): assumed to have used every service and to call it again"
	case b.Running:
		out.Reason = fmt.Sprintf("running on %s now", name)
	default:
		past := "used " + name
		if out.PastVersion != "" {
			past += "@" + out.PastVersion
		}
		out.Reason = fmt.Sprintf("%s and may call it again (still running at %s)", past, out.FutureVia)
	}
	return out
}

func (a admin) GetGraph(ctx context.Context, req *pb.GetGraphRequest) (*pb.Graph, error) {
	n, err := limit(req.GetTxnLimit(), defaultGraphTxns, maxGraphTxns, "txn_limit")
	if err != nil {
		return nil, err
	}
	c := a.c
	c.mu.Lock()
	defer c.mu.Unlock()
	out := &pb.Graph{LiveTransactions: uint32(c.eng.Live())}
	// byID has a node per service id, nil for a removed (forgotten) one.
	byID := make([]*pb.ServiceNode, c.eng.ServiceIDBound())
	nodes := make([]*pb.ServiceNode, 0, c.eng.NumServices())
	for i := range byID {
		s := graph.ServiceID(i)
		if !c.eng.ValidService(s) {
			continue
		}
		nd := &pb.ServiceNode{
			Name:     c.eng.ServiceName(s),
			Free:     c.eng.Free(s),
			UsedBy:   uint32(c.eng.UsedCount(s)),
			Blocking: uint32(c.eng.BlockerCount(s)),
		}
		byID[i] = nd
		nodes = append(nodes, nd)
		for _, to := range c.eng.Successors(s) {
			declared := c.cat.isDeclared(edge{s, to})
			out.Edges = append(out.Edges, &pb.Edge{From: nd.Name, To: c.eng.ServiceName(to), Learned: !declared})
		}
	}
	// Which live transactions used each service: one pass, stopping once every
	// service that has users has its n ids.
	want := 0
	for _, nd := range nodes {
		want += min(n, int(nd.UsedBy))
	}
	if want > 0 {
		c.eng.ForEachTxn(func(t graph.TxnInfo) bool {
			for _, u := range t.Used {
				if nd := byID[u.Service]; nd != nil && len(nd.Transactions) < n {
					nd.Transactions = append(nd.Transactions, t.ID)
					want--
				}
			}
			return want > 0
		})
	}
	perVersion := make(map[string]map[string]uint32)
	for s := range c.sess.all() {
		m := perVersion[s.rec.Service]
		if m == nil {
			m = make(map[string]uint32)
			perVersion[s.rec.Service] = m
		}
		m[s.rec.Version]++
	}
	for _, nd := range nodes {
		for v, k := range perVersion[nd.Name] {
			nd.Versions = append(nd.Versions, &pb.VersionSessions{Version: v, Sessions: k})
		}
		slices.SortFunc(nd.Versions, func(a, b *pb.VersionSessions) int { return strings.Compare(a.Version, b.Version) })
		slices.Sort(nd.Transactions)
	}
	slices.SortFunc(nodes, func(a, b *pb.ServiceNode) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(out.Edges, func(a, b *pb.Edge) int {
		if d := strings.Compare(a.From, b.From); d != 0 {
			return d
		}
		return strings.Compare(a.To, b.To)
	})
	out.Services = nodes
	return out, nil
}

func (a admin) ListSessions(ctx context.Context, req *pb.ListSessionsRequest) (*pb.ListSessionsResponse, error) {
	if req.GetService() != "" {
		if err := storage.ValidName("service", req.Service); err != nil {
			return nil, err
		}
	}
	c := a.c
	c.mu.Lock()
	defer c.mu.Unlock()
	roots := make(map[graph.Owner]uint32)
	c.eng.ForEachTxn(func(t graph.TxnInfo) bool {
		roots[t.Owner]++
		return true
	})
	out := &pb.ListSessionsResponse{}
	for s := range c.sess.all() {
		if req.GetService() != "" && s.rec.Service != req.Service {
			continue
		}
		out.Sessions = append(out.Sessions, &pb.Session{
			InstanceId:   s.rec.InstanceId,
			Service:      s.rec.Service,
			Version:      s.rec.Version,
			Address:      s.rec.Address,
			LeaseId:      s.rec.LeaseId,
			Ttl:          durationpb.New(s.ttl),
			Connected:    s.stream != nil,
			RegisteredAt: s.rec.RegisteredAt,
			Roots:        roots[s.owner],
			Identity:     s.rec.Identity,
		})
	}
	slices.SortFunc(out.Sessions, func(a, b *pb.Session) int { return strings.Compare(a.InstanceId, b.InstanceId) })
	return out, nil
}

func (a admin) ListTransactions(ctx context.Context, req *pb.ListTransactionsRequest) (*pb.ListTransactionsResponse, error) {
	n, err := limit(req.GetLimit(), defaultTxnLimit, maxTxnLimit, "limit")
	if err != nil {
		return nil, err
	}
	c := a.c
	c.mu.Lock()
	defer c.mu.Unlock()
	filter := graph.ServiceID(0)
	if req.GetService() != "" {
		if err := storage.ValidName("service", req.Service); err != nil {
			return nil, err
		}
		s, ok := c.eng.LookupService(req.Service)
		if !ok {
			return nil, fmt.Errorf("%w %q", ErrUnknownService, req.Service)
		}
		filter = s
	}
	out := &pb.ListTransactionsResponse{}
	c.eng.ForEachTxn(func(t graph.TxnInfo) bool {
		if req.GetService() != "" && !slices.ContainsFunc(t.Used, func(u graph.Use) bool { return u.Service == filter }) {
			return true
		}
		out.Total++
		if len(out.Transactions) < n {
			out.Transactions = append(out.Transactions, c.txnLocked(t))
		}
		return true
	})
	slices.SortFunc(out.Transactions, func(a, b *pb.Transaction) int { return strings.Compare(a.TxnId, b.TxnId) })
	return out, nil
}

func (c *Coordinator) txnLocked(t graph.TxnInfo) *pb.Transaction {
	out := &pb.Transaction{
		TxnId:       t.ID,
		Entry:       c.eng.ServiceName(t.Entry),
		Legacy:      t.Legacy,
		Implicit:    t.Implicit,
		LearnedEdge: t.LearnedEdge,
	}
	if s := c.sess.owner(t.Owner); s != nil { // an expired one kept by self-preservation too
		out.Owner = s.rec.InstanceId
	}
	for _, u := range t.Used {
		out.Used = append(out.Used, &pb.ServiceVersion{Service: c.eng.ServiceName(u.Service), Version: c.eng.VersionName(u.Version)})
	}
	for _, r := range t.Running {
		st := &pb.SubTransaction{Id: uint64(r.ID), Service: c.eng.ServiceName(r.Service)}
		for _, d := range r.Done {
			st.Done = append(st.Done, c.eng.ServiceName(d))
		}
		out.Running = append(out.Running, st)
	}
	for _, b := range t.Blocks {
		out.Blocks = append(out.Blocks, c.eng.ServiceName(b))
	}
	return out
}
