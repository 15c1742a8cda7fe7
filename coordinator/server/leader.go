package server

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/coordinator/coordinator/coordinator"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
	"github.com/coordinator/coordinator/storage/embedetcd"
)

// DefaultLeaderTTL is the TTL of the election session's lease: how long a
// leader that died keeps the others from taking over. etcd refuses leases
// much shorter than its election timeout (1 s): 2 s is the floor.
const DefaultLeaderTTL = 2 * time.Second

// campaignRetry is the pause before campaigning again after a failed
// request, and before a new election session after one failed.
const campaignRetry = 200 * time.Millisecond

// failedStartBackoff is the pause after winning an election but failing to
// restore state.
const failedStartBackoff = 2 * time.Second

// Leadership (DESIGN.md §6), Nomad style: one loop campaigns with an etcd
// concurrency.Election on its session's context; once elected it starts a
// Coordinator whose every write is fenced on the election key's create
// revision, and leads until Close, until the session ends (its lease is
// lost: stop acting at once), or until a fenced write fails. Then the
// coordinator is dropped and the loop campaigns again. A follower observes
// the election to know the leader's address: it redirects sidecars there
// and forwards admin calls.

// term is one leadership term.
type term struct {
	coord *coordinator.Coordinator
	reg   *prometheus.Registry // the coordinator's metrics, per term
}

// Leader returns the coordinator while this replica leads, else nil.
func (s *Server) Leader() *coordinator.Coordinator {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cur == nil {
		return nil
	}
	return s.cur.coord
}

// LeaderInfo returns the replica that leads as last observed (nil when no
// leader is known).
func (s *Server) LeaderInfo() *pb.Replica {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.leader
}

// Self describes this replica as it campaigns.
func (s *Server) Self() *pb.Replica { return proto.Clone(s.self).(*pb.Replica) }

// WaitLeader waits until some replica (this one or another) is known to lead.
func (s *Server) WaitLeader(ctx context.Context) (*pb.Replica, error) {
	for {
		s.mu.RLock()
		l, ch := s.leader, s.leaderChanged
		s.mu.RUnlock()
		if l != nil {
			return l, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

// WaitLeading waits until this replica leads and returns its coordinator:
// for a replica alone on its etcd, or one a test wants to lead.
func (s *Server) WaitLeading(ctx context.Context) (*coordinator.Coordinator, error) {
	for {
		if c := s.Leader(); c != nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

func (s *Server) setLeaderInfo(l *pb.Replica) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if proto.Equal(l, s.leader) {
		return
	}
	s.leader = l
	close(s.leaderChanged)
	s.leaderChanged = make(chan struct{})
	defer func() { go s.updateServing() }() // it takes s.mu, held here
	if l != nil {
		s.lg.Info("leader observed", "leader", l.Name, "grpc_addr", l.GrpcAddress, "self", l.Name == s.self.Name)
	}
}

// lead campaigns and leads until stop is closed.
func (s *Server) lead(stop <-chan struct{}) {
	defer close(s.leadDone)
	for {
		select {
		case <-stop:
			return
		default:
		}
		if err := s.campaign(stop); err != nil {
			s.lg.Warn("election", "error", err)
			select {
			case <-stop:
				return
			case <-time.After(campaignRetry):
			}
		}
	}
}

// campaignStopGrace is how long a replica that does not lead gives its
// election's clean-up (the campaign resigning its candidate key, the
// session revoking its lease) when it stops: enough for a healthy etcd, so
// that the key does not linger for a TTL, and bounded for one that does
// not answer.
const campaignStopGrace = time.Second

// campaign runs one election session: it campaigns, leads one term if it
// wins, and returns when the session is over or stop is closed.
func (s *Server) campaign(stop <-chan struct{}) error {
	// The session's context ends campaignStopGrace after stop while not
	// leading, so that an etcd that does not answer does not hold Close.
	// While leading the term ends first: its keep-alives go on until it
	// has flushed and resigned (a stop must not lose the fence mid-flush).
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	var leading atomic.Bool
	go func() {
		select {
		case <-stop:
			if leading.Load() {
				return
			}
			t := time.NewTimer(campaignStopGrace)
			defer t.Stop()
			select {
			case <-t.C:
				if !leading.Load() {
					scancel()
				}
			case <-sctx.Done():
			}
		case <-sctx.Done():
		}
	}()
	// The election's etcd calls go through s.cli's connection with a
	// context that is sctx: a cancelled Campaign resigns its candidate key
	// on its client's context (concurrency.Election.Campaign), which with
	// s.cli itself lasts until the client closes, after Close has waited
	// for this loop; a follower stopping while etcd was slow waited there
	// past its shutdown bound. Not closed: that would close s.cli's
	// watcher and leases; sctx's end releases it.
	ecli := clientv3.NewCtxClient(sctx)
	ecli.KV, ecli.Lease, ecli.Watcher = s.cli.KV, s.cli.Lease, s.cli.Watcher
	sess, err := concurrency.NewSession(ecli, concurrency.WithTTL(int(s.leaderTTL/time.Second)), concurrency.WithContext(sctx))
	if err != nil {
		return err
	}
	defer sess.Close() // revokes the lease: the election key goes with it
	e := concurrency.NewElection(sess, s.keys.Election())

	obsCtx, obsCancel := context.WithCancel(sess.Ctx())
	var obs sync.WaitGroup
	obs.Add(1)
	go func() { defer obs.Done(); s.observe(obsCtx, e) }()
	defer func() { obsCancel(); obs.Wait() }()

	// Campaign on the session's context: if the session dies while
	// campaigning, so does the campaign (etcd issue #8722 and kin).
	cctx, ccancel := context.WithCancel(sess.Ctx())
	go func() {
		select {
		case <-stop:
			ccancel()
		case <-cctx.Done():
		}
	}()
	val, _ := proto.Marshal(s.self)
	for {
		err = e.Campaign(cctx, string(val))
		if err == nil || cctx.Err() != nil {
			break
		}
		// A request that failed (one timed out while etcd elected a Raft
		// leader): campaign again in the same session, which finds its
		// candidate key and keeps its place in line. A new session would
		// delete the key first: for a moment this replica would not be
		// listed, and it would go to the back of the line.
		s.lg.Warn("election: campaigning again", "error", err, "in", campaignRetry)
		select {
		case <-cctx.Done():
		case <-time.After(campaignRetry):
		}
	}
	ccancel()
	if err != nil {
		select {
		case <-stop:
			return nil
		default:
			return err
		}
	}
	leading.Store(true)
	s.serveTerm(stop, sess, e, scancel)
	return nil
}

// serveTerm leads: it starts a fenced coordinator and keeps it until the
// session ends, a write fails its fence, or stop.
func (s *Server) serveTerm(stop <-chan struct{}, sess *concurrency.Session, e *concurrency.Election, endSession context.CancelFunc) {
	started := time.Now()
	fenced := make(chan struct{})
	var once sync.Once
	cfg := s.ccfg
	// Every write of the term is fenced on the election key's create
	// revision (DESIGN.md §6).
	cfg.Store = storage.NewEtcd(s.cli, storage.EtcdConfig{Prefix: s.keys.Prefix, Logger: s.lg,
		Fence: &storage.Fence{Key: e.Key(), CreateRev: e.Rev()}, Renew: s.renew})
	cfg.OnFenced = func() { once.Do(func() { close(fenced) }) }
	t := &term{reg: prometheus.NewRegistry()}
	cfg.Registerer = t.reg
	var err error
	if t.coord, err = coordinator.New(cfg); err == nil {
		ctx, cancel := context.WithTimeout(sess.Ctx(), s.startTimeout)
		err = t.coord.Start(ctx)
		cancel()
	}
	if err != nil {
		s.lg.Error("elected, but the coordinator did not start; resigning", "error", err)
		s.mu.Lock()
		s.startErr, s.startErrAt = err, time.Now()
		s.mu.Unlock()
		if t.coord != nil {
			t.coord.Abandon()
			_ = t.coord.Stop(context.Background())
		}
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		_ = e.Resign(rctx)
		rcancel()
		// Do not spin: a state that cannot be restored fails every
		// replica alike.
		select {
		case <-stop:
		case <-time.After(failedStartBackoff):
		}
		return
	}
	s.mu.Lock()
	s.cur = t
	s.terms++
	s.startErr = nil
	s.termErr = nil // Close reports the last term's stop only
	s.mu.Unlock()
	s.metrics.isLeader.Set(1)
	s.updateServing()
	s.lg.Info("leading", "election_key", e.Key(), "election_rev", e.Rev(), "took", time.Since(started))
	termDone := make(chan struct{})
	endTerm := sync.OnceFunc(func() { close(termDone) })
	defer endTerm()
	if s.raftPeers {
		go s.keepRaftElsewhere(s.etcd, termDone)
	}

	graceful := false
	select {
	case <-stop:
		graceful = !s.crashed.Load()
	case <-sess.Done():
		s.lg.Warn("election session ended: no longer leading")
	case <-fenced:
		s.lg.Warn("a write failed its fence: no longer leading")
	case <-s.keyLost(e):
		s.lg.Warn("the election key is not this replica's any more: no longer leading")
	}
	endTerm() // no more Raft hand-offs: the next leader may be on their destination
	if !graceful {
		t.coord.Abandon() // before anyone else can see no leader here
		if s.crashed.Load() {
			endSession() // as a dead process: no revoke, the key expires with its TTL
		}
	}
	s.mu.Lock()
	s.ourKey, s.lostKey = "", nil
	s.mu.Unlock()
	s.mu.Lock()
	s.cur = nil
	s.mu.Unlock()
	s.metrics.isLeader.Set(0)
	s.updateServing()
	parent := context.Background()
	if graceful {
		s.mu.RLock()
		if s.closeCtx != nil {
			parent = s.closeCtx
		}
		s.mu.RUnlock()
	}
	ctx, cancel := context.WithTimeout(parent, s.stopTimeout)
	if err := t.coord.Stop(ctx); err != nil {
		s.lg.Warn("coordinator stop", "graceful", graceful, "error", err)
		s.mu.Lock()
		s.termErr = err
		s.mu.Unlock()
	}
	cancel()
	if graceful {
		// Hand over now rather than after the lease's TTL.
		rctx, rcancel := context.WithTimeout(parent, time.Second)
		if err := e.Resign(rctx); err != nil {
			s.lg.Warn("resign", "error", err)
		}
		rcancel()
	}
}

// keyLost returns a channel closed once the observed leader is not the
// key e campaigned with: a leader whose key was deleted (or another
// replica's is first) stops even if it writes nothing and its session
// lives (its sidecars' heartbeats would otherwise keep their sessions
// alive while the new leader waits for them).
func (s *Server) keyLost(e *concurrency.Election) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lostKey == nil {
		s.lostKey = make(chan struct{})
	}
	s.ourKey = e.Key()
	return s.lostKey
}

// observeRetry is how long observe waits before it observes again after
// etcd's Observe ended on an error, doubled while it keeps failing at once
// (etcd unreachable), up to observeRetryMax. Short: while a cluster forms,
// reads fail for a moment as Raft leadership is handed away from the
// leading replica's member (keepRaftElsewhere), and a follower that waited
// seconds to observe again answered /health "no leader elected" meanwhile.
const (
	observeRetry    = 100 * time.Millisecond
	observeRetryMax = 500 * time.Millisecond
)

// observe follows who leads until ctx ends. etcd's Election.Observe ends
// its channel, silently, when one of its reads fails or its watch breaks
// (a request that timed out while etcd elected a Raft leader, at a
// cluster's start or after a member went down): observe then observes
// again, or this replica would never learn of a leader after that (its
// /health said "no leader elected" while another led, and it could not
// forward).
func (s *Server) observe(ctx context.Context, e *concurrency.Election) {
	wait := observeRetry
	for {
		answered := false
		for resp := range e.Observe(ctx) {
			answered = true
			s.observed(resp)
		}
		if ctx.Err() != nil {
			return
		}
		if answered {
			wait = observeRetry
		}
		if wait == observeRetry { // the first of a run: logged once
			s.lg.Info("election: etcd's observation of the leader ended; observing again", "in", wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, observeRetryMax)
	}
}

// observed takes in one answer of etcd's Observe.
func (s *Server) observed(resp *clientv3.GetResponse) {
	s.mu.Lock()
	if s.ourKey != "" && s.lostKey != nil && (len(resp.Kvs) == 0 || string(resp.Kvs[0].Key) != s.ourKey) {
		close(s.lostKey)
		s.lostKey, s.ourKey = nil, ""
	}
	s.mu.Unlock()
	if len(resp.Kvs) == 0 {
		s.setLeaderInfo(nil)
		return
	}
	r := &pb.Replica{}
	if err := proto.Unmarshal(resp.Kvs[0].Value, r); err != nil {
		s.lg.Warn("undecodable election value", "key", string(resp.Kvs[0].Key), "error", err)
		return
	}
	r.Leader = true
	s.setLeaderInfo(r)
}

// forwardConn returns a client connection to the leader, for followers.
func (s *Server) forwardConn() (*grpc.ClientConn, *pb.Replica, error) {
	l := s.LeaderInfo()
	if l == nil {
		return nil, nil, errNoLeader
	}
	s.fwdMu.Lock()
	defer s.fwdMu.Unlock()
	if s.fwd != nil && s.fwdAddr == l.GrpcAddress {
		return s.fwd, l, nil
	}
	if s.fwd != nil {
		s.fwd.Close()
		s.fwd = nil
	}
	// With TLS, mTLS: this replica's certificate as the client's, the
	// leader's verified against the client CA (transport.go).
	conn, err := grpc.NewClient(l.GrpcAddress, grpc.WithTransportCredentials(s.tr.dialCreds()))
	if err != nil {
		return nil, nil, err
	}
	s.fwd, s.fwdAddr = conn, l.GrpcAddress
	return conn, l, nil
}

// raftHandOffRetry is how long keepRaftElsewhere waits after a failed
// hand-off (no other member serves and follows this one) before it tries
// again.
const raftHandOffRetry = 5 * time.Second

// keepRaftElsewhere hands Raft leadership away from this replica's etcd
// member whenever the member has it, until done closes. If this process
// dies, the next leader waits for its election key to expire; if its etcd
// member led Raft too, that waits for a Raft election and then a whole
// lease TTL more, as the new Raft leader renews every lease (bench/failover:
// 4.2-4.7 s instead of 1.4-2.2 s). The hand-off only picks a member that
// serves clients, so leadership a stopping member just gave away is not
// handed back to it (embedetcd.HandOffRaftLeadership).
func (s *Server) keepRaftElsewhere(member *embedetcd.Server, done <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-done
		cancel()
	}()
	for {
		changed := member.RaftLeaderChanged()
		var retry <-chan time.Time
		if member.LeadsRaft() {
			err := member.HandOffRaftLeadership(ctx)
			switch {
			case ctx.Err() != nil:
			case errors.Is(err, embedetcd.ErrNoTransferee):
				// A degraded cluster: nothing to do until a member is back.
				s.lg.Debug("no etcd member to hand Raft leadership to", "retry_in", raftHandOffRetry)
				retry = time.After(raftHandOffRetry)
			case err != nil:
				s.lg.Warn("could not hand Raft leadership to another etcd member", "error", err, "retry_in", raftHandOffRetry)
				retry = time.After(raftHandOffRetry)
			default:
				s.lg.Debug("Raft leadership handed to another etcd member")
			}
		}
		select {
		case <-done:
			return
		case <-changed:
		case <-retry:
		}
	}
}
