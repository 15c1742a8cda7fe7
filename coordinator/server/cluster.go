package server

import (
	"cmp"
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// memberStatusTimeout bounds the status request to each etcd member, so
// that a member that is down costs the view this long at most.
const memberStatusTimeout = 2 * time.Second

// ClusterView builds the cluster view of GetCluster: the etcd members
// with their health, and the replicas campaigning under electionPrefix
// (storage.Keys.Election(); concurrency.Election keeps one key per
// campaigner under electionPrefix+"/", whose value is a marshaled
// pb.Replica), in campaign order, the first one leading. answeredBy names
// the replica that answers.
//
// Reads are linearizable; when that fails (etcd lost its quorum), the
// member list and the replicas are read from the member the client
// reaches (serializable, possibly stale) so that the view still shows
// which members are down. Only when both reads fail is there an error.
func ClusterView(ctx context.Context, cli *clientv3.Client, electionPrefix, answeredBy string) (*pb.Cluster, error) {
	view := &pb.Cluster{AnsweredBy: answeredBy}

	replicas, err := campaigners(ctx, cli, electionPrefix)
	if err != nil {
		return nil, err
	}
	view.Replicas = replicas
	if len(replicas) > 0 {
		replicas[0].Leader = true
		view.Leader = proto.CloneOf(replicas[0])
	}

	ml, err := cli.MemberList(ctx)
	if err != nil {
		if ml, err = cli.MemberList(ctx, clientv3.WithSerializable()); err != nil {
			return nil, fmt.Errorf("server: cluster view: member list: %w", err)
		}
	}
	view.Members = memberHealth(ctx, cli, ml)
	return view, nil
}

// campaigners lists the replicas campaigning under prefix, oldest
// campaign (the leader) first.
func campaigners(ctx context.Context, cli *clientv3.Client, prefix string) ([]*pb.Replica, error) {
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend)}
	resp, err := cli.Get(ctx, prefix+"/", opts...)
	if err != nil {
		if resp, err = cli.Get(ctx, prefix+"/", append(opts, clientv3.WithSerializable())...); err != nil {
			return nil, fmt.Errorf("server: cluster view: election keys under %s: %w", prefix, err)
		}
	}
	replicas := make([]*pb.Replica, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		r := &pb.Replica{}
		if err := proto.Unmarshal(kv.Value, r); err != nil || r.GetName() == "" {
			// Not a replica of ours (or an older format): show its key
			// (the campaigner's lease) rather than hide a campaigner.
			r = &pb.Replica{Name: "lease-" + path.Base(string(kv.Key))}
		}
		replicas = append(replicas, r)
	}
	return replicas, nil
}

// memberHealth asks every member for its status, in parallel, and marks
// the raft leader: the leader that the member answering with the highest
// raft term reports (so a member that missed an election does not mislead).
func memberHealth(ctx context.Context, cli *clientv3.Client, ml *clientv3.MemberListResponse) []*pb.EtcdMember {
	members := make([]*pb.EtcdMember, len(ml.Members))
	statuses := make([]*clientv3.StatusResponse, len(ml.Members))
	var wg sync.WaitGroup
	for i, m := range ml.Members {
		em := &pb.EtcdMember{
			Id:         m.ID,
			Name:       m.Name,
			PeerUrls:   slices.Clone(m.PeerURLs),
			ClientUrls: slices.Clone(m.ClientURLs),
			Learner:    m.IsLearner,
		}
		members[i] = em
		// A single member opens no client listener, and so publishes no
		// client URL; its process's in-process client (which has no
		// endpoints) still asks it (memberStatus).
		if len(m.ClientURLs) == 0 && (m.Name == "" || len(cli.Endpoints()) > 0) {
			em.Error = "not started: no client URL published"
			continue
		}
		wg.Go(func() { statuses[i] = memberStatus(ctx, cli, em) })
	}
	wg.Wait()

	var leader, term uint64
	for _, st := range statuses {
		if st != nil && st.Leader != 0 && st.RaftTerm >= term {
			leader, term = st.Leader, st.RaftTerm
		}
	}
	for _, em := range members {
		em.RaftLeader = leader != 0 && em.Id == leader
	}
	slices.SortFunc(members, func(a, b *pb.EtcdMember) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Id, b.Id))
	})
	return members
}

// memberStatus asks em for its status at each of its client URLs until
// one answers, and fills in its health. A member is healthy when it
// answers and reports no error (no raft leader, an alarm such as NOSPACE).
// An in-process client asks a member without client URLs in process.
func memberStatus(ctx context.Context, cli *clientv3.Client, em *pb.EtcdMember) *clientv3.StatusResponse {
	var errs []string
	urls := em.ClientUrls
	if len(urls) == 0 && len(cli.Endpoints()) == 0 {
		urls = []string{""}
	}
	for _, u := range urls {
		sctx, cancel := context.WithTimeout(ctx, memberStatusTimeout)
		st, err := cli.Status(sctx, u)
		cancel()
		where := u
		if where == "" {
			where = "in process"
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", where, err))
			continue
		}
		if id := st.Header.GetMemberId(); id != em.Id {
			// An in-process client (a single member's) answers every
			// Status itself, whatever the URL: a member added since has
			// no status of its own here.
			errs = append(errs, fmt.Sprintf("%s: answered by member %x, not %x: not reachable from this replica's client", where, id, em.Id))
			continue
		}
		em.DbSizeBytes = st.DbSize
		em.RaftIndex = st.RaftIndex
		em.Healthy = len(st.Errors) == 0
		em.Error = strings.Join(st.Errors, "; ")
		return st
	}
	em.Error = strings.Join(errs, "; ")
	return nil
}
