// Package embedetcd runs an etcd member inside the coordinator process.
//
// With no options it is a single member on loopback, in a local data
// directory, with a peer port picked by the kernel and no client listener
// at all: the process calls it in process through LocalClient. Set
// ClientAddr for clients in other processes:
//
//	srv, err := embedetcd.Start(ctx, embedetcd.Config{DataDir: dir})
//	if err != nil { ... }
//	defer srv.Close()
//	cli := srv.LocalClient()
//
// Three processes given the same InitialCluster
// ("n1=http://10.0.0.1:2380,n2=...,n3=...") and their own Name form a
// three-member Raft cluster (etcd's 100 ms heartbeat and 1 s election
// timeout). Restarting on the same DataDir keeps keys and leases; a
// cluster member restarted so rejoins its cluster and catches up from the
// leader. InitialCluster and ClusterState are then ignored, as in etcd. A
// member whose DataDir was lost must instead be removed and added again
// (etcdctl member remove/add) and started with ClusterState "existing".
// A cluster member always serves clients (ClientAddr defaults to
// "127.0.0.1:0"), and its Endpoints include the other members' client
// URLs, so that its client survives the loss of the local member.
//
// PeerTLS secures the Raft traffic between members with mutual TLS (peer
// URLs, and so InitialCluster, are then https://), and ClientTLS the
// client listener (https://, a client certificate verified by its CA
// required). Every connection this package opens itself (a Raft hand-off
// asks the other members for their status) presents ClientTLS's
// certificate. etcd reads the files at each handshake, so certificates
// rotated in place need no restart.
//
// Port 0 ("127.0.0.1:0", the default) picks a free port before etcd binds
// it, so the URLs etcd advertises to clients and peers carry the real port;
// Endpoints returns them. A single member started again on the same
// DataDir with a new peer port updates its stored peer URL.
//
// etcd's own zap logs go to Config.Logger through log/slog, at LogLevel
// ("error" by default: etcd is chatty at info).
package embedetcd
