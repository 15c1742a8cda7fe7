// Package embedetcd runs an etcd member inside the coordinator process.
//
// With no options it is a single member on loopback, in a local data
// directory, with ports picked by the kernel:
//
//	srv, err := embedetcd.Start(ctx, embedetcd.Config{DataDir: dir})
//	if err != nil { ... }
//	defer srv.Close()
//	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints()})
//
// Three processes given the same InitialCluster
// ("n1=http://10.0.0.1:2380,n2=...,n3=...") and their own Name form a
// three-member Raft cluster (etcd's 100 ms heartbeat and 1 s election
// timeout). Restarting on the same DataDir keeps keys and leases; a
// cluster member restarted so rejoins its cluster and catches up from the
// leader. InitialCluster and ClusterState are then ignored, as in etcd. A
// member whose DataDir was lost must instead be removed and added again
// (etcdctl member remove/add) and started with ClusterState "existing".
// A cluster member's Endpoints include the other members' client URLs, so
// that its client survives the loss of the local member.
//
// Port 0 ("127.0.0.1:0", the default) picks a free port before etcd binds
// it, so the URLs etcd advertises to clients and peers carry the real port;
// Endpoints returns them. A single member started again on the same
// DataDir with a new peer port updates its stored peer URL.
//
// etcd's own zap logs go to Config.Logger through log/slog, at LogLevel
// ("error" by default: etcd is chatty at info).
package embedetcd
