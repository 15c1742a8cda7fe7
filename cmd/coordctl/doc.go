// Command coordctl is the operators' command-line client of the coordinator.
//
// It talks to the coordinator's admin gRPC API (coordinator.v1.AdminService)
// and prints the answers as tables, as JSON (-o json: the protojson form of
// the response, indented and stable) or, for the graph, as Graphviz DOT.
//
// Usage:
//
//	coordctl [--server ADDR] [-o table|json] [--timeout D] COMMAND [ARGS]
//
// Commands:
//
//	freeness SERVICE   whether a service is free and which transactions block it
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
// success, 1 when a call fails and 2 on a usage error (bad flag or argument).
//
// Every command lives in a file of its own that registers itself with
// registerCommand from an init function; rendering is done by pure functions
// that take the response and an io.Writer.
package main
