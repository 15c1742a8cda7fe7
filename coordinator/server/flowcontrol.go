package server

import "google.golang.org/grpc"

// HTTP/2 receive windows of the coordinator's gRPC server, fixed.
//
// gRPC's default is a dynamic window (BDP estimation): after each completed
// estimate, the next DATA frame received makes the receiver send a
// connection WINDOW_UPDATE and a PING, which the peer answers. On an idle
// sidecar stream every heartbeat is such a frame, so each heartbeat cost
// the coordinator a PING written and its answer read on top of the
// heartbeat and its ack (and the SDK did the same for each ack). Fixed
// windows send no PINGs. They also bound what one peer can make the
// coordinator buffer (the dynamic window grows up to 16 MiB a stream): a
// stream's window is serverStreamWindow; a message larger than it (a
// registration of up to MaxRecvMsgSize) is still received, gRPC widens the
// window for a message it has started to read.
const (
	serverStreamWindow = 256 << 10
	serverConnWindow   = 1 << 20
)

// flowControlOptions fixes the server's receive windows (see above).
func flowControlOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.StaticStreamWindowSize(serverStreamWindow),
		grpc.StaticConnWindowSize(serverConnWindow),
	}
}
