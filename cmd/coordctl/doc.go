// Command coordctl is the operators' command-line client of the coordinator.
//
// It talks to the coordinator's admin gRPC API (coordinator.v1.AdminService)
// and prints the answers as tables that fit an 80-column terminal (long cells
// cut, ending in "~"), as wide tables (-o wide: every column, uncut), as JSON
// (-o json: the protojson form of the response, indented and stable) or, for
// the graph, as Graphviz DOT.
//
// Usage:
//
//	coordctl [--server ADDR] [-o table|wide|json] [--timeout D] COMMAND [ARGS]
//
// Commands:
//
//	services           every service: default version, versions, free, updates
//	service NAME       one service: versions with instances and live transactions
//	update SERVICE     start an update (--to, default the one other version;
//	                   --dry-run says what would happen; --watch/-w follows it)
//	status [ID]        the updates, or one with its progress (--watch/-w)
//	abort ID           abort an update in flight
//	history SERVICE    the updates of a service, newest first
//	rollback SERVICE   a new update back to the version before the last DONE one
//	freeness SERVICE   whether a service is free and which transactions block it
//	                   (--wait until it is)
//	graph              the static graph and what live transactions used (--dot)
//	sessions           sidecar sessions
//	txns               live transactions
//	cluster            the replicas, which one leads, and the etcd members' health
//	selfpreservation   the self-preservation mode (status), or end it (off)
//	version            this build's version and commit (also --version)
//
// The server address defaults to 127.0.0.1:7400 and can be set with the
// COORDCTL_SERVER environment variable; --server wins over it. Either may
// list the replicas of a cluster, comma-separated: each call goes to them in
// turn until one answers, passing over a replica that cannot be reached or
// answers Unavailable.
//
// Errors are printed as "Error: <message>" on stderr. The exit status is 0 on
// success, 1 when a call fails (or a watched update, a dry run or a rollback
// does not succeed), 2 on a usage error (bad flag or argument; update without
// --to when the service has no single other registered version), and 3 when
// freeness finds the service not free.
//
// Every command lives in a file of its own that registers itself with
// registerCommand from an init function; rendering is done by pure functions
// that take the response and an io.Writer.
package main
