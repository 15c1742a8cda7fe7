package sidecar

import "google.golang.org/grpc"

// HTTP/2 receive windows of the stream to the coordinator, fixed.
//
// gRPC's default dynamic window (BDP estimation) sends a connection
// WINDOW_UPDATE and a PING after the first DATA frame received following
// each completed estimate: on an idle session, once per HeartbeatAck, which
// cost this client a PING written and answered and the coordinator a PING
// read and answered per heartbeat. Fixed windows send no PINGs. What the
// coordinator sends that is large is a routing table: 1 MiB a stream lets
// one of a few hundred kB arrive without waiting for a window update (the
// dynamic window starts at 64 KiB). DialOptions given in Config come after
// these and may set other windows.
const (
	streamWindow = 1 << 20
	connWindow   = 1 << 20
)

// flowControlOptions fixes the receive windows (see above).
func flowControlOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithStaticStreamWindowSize(streamWindow),
		grpc.WithStaticConnWindowSize(connWindow),
	}
}
