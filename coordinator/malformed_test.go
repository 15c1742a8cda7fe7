package coordinator_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// rawCodec sends []byte as they are: a client that writes what it likes.
type rawCodec struct{ proto encoding.CodecV2 }

func (c rawCodec) Name() string { return "proto" }
func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.([]byte); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return c.proto.Marshal(v)
}
func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

// TestMalformedMessageEndsTheStreamAsInvalidArgument: bytes that are not a
// SidecarMessage end the stream with InvalidArgument saying why, after
// the valid batches before them were applied; a well-formed batch after a
// malformed one on another stream is unaffected.
func TestMalformedMessageEndsTheStreamAsInvalidArgument(t *testing.T) {
	m := startMem(t)
	good := m.Sidecar("a-1", "a", "v1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	desc := &grpc.StreamDesc{StreamName: "Connect", ServerStreams: true, ClientStreams: true}
	st, err := m.Conn.NewStream(ctx, desc, pb.SidecarService_Connect_FullMethodName,
		grpc.ForceCodecV2(rawCodec{proto: encoding.GetCodecV2("proto")}))
	if err != nil {
		t.Fatal(err)
	}
	reg, _ := proto.Marshal(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Register{Register: &pb.Register{
		InstanceId: "bad-1", Service: "bad", Version: "v1"}}})
	if err := st.SendMsg(reg); err != nil {
		t.Fatal(err)
	}
	var first pb.CoordinatorMessage
	if err := st.RecvMsg(&first); err != nil || first.GetRegistered() == nil {
		t.Fatalf("register: %v %v", &first, err)
	}
	// An event batch whose event's txn_id is not UTF-8.
	bad := []byte{0x12, 0x07, 0x0a, 0x05, 0x1a, 0x03, 0xff, 'x', 'y'}
	if err := st.SendMsg(bad); err != nil {
		t.Fatal(err)
	}
	for {
		var msg pb.CoordinatorMessage
		err := st.RecvMsg(&msg)
		if err == nil {
			continue // routing snapshots
		}
		s := status.Convert(err)
		if s.Code() != codes.InvalidArgument || !strings.Contains(s.Message(), "decoding SidecarMessage") ||
			!strings.Contains(s.Message(), "UTF-8") {
			t.Fatalf("stream ended with %v, want InvalidArgument naming the decoding error", err)
		}
		break
	}
	// The other stream goes on.
	ack, err := good.Send(ctx, &pb.Event{Type: pb.EventType_EVENT_TYPE_BEGIN, TxnId: "t-1", SubId: 1})
	if err != nil || len(ack.GetErrors()) > 0 {
		t.Fatalf("a well-formed stream after the malformed one: %v %v", ack, err)
	}
}
