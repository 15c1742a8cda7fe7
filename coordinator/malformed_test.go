package coordinator_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/coordinator/coordinator/coordinator"
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

// TestOversizedBatchIsRefusedInItsAck: a batch of more than
// MaxEventsPerBatch events is refused whole in its Ack (InvalidArgument,
// through its last seq; the receiver refuses it before decoding its
// events), and the stream goes on.
func TestOversizedBatchIsRefusedInItsAck(t *testing.T) {
	m := startMem(t)
	sc := m.Sidecar("a-1", "a", "v1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	evs := make([]*pb.Event, coordinator.MaxEventsPerBatch+1)
	for i := range evs {
		evs[i] = &pb.Event{Type: pb.EventType_EVENT_TYPE_BEGIN, TxnId: fmt.Sprintf("t-%d", i), SubId: 1}
	}
	ack, err := sc.Send(ctx, evs...)
	if err != nil {
		t.Fatal(err)
	}
	if len(ack.GetErrors()) != 1 || ack.Errors[0].Code != int32(codes.InvalidArgument) ||
		!strings.Contains(ack.Errors[0].Message, fmt.Sprintf("batch of %d events is larger than %d", len(evs), coordinator.MaxEventsPerBatch)) ||
		ack.ThroughSeq != evs[len(evs)-1].Seq {
		t.Fatalf("ack %v, want one InvalidArgument error through seq %d", ack, evs[len(evs)-1].Seq)
	}
	if n := m.Leader().Live(); n != 0 {
		t.Fatalf("%d transactions live after the refused batch, want 0", n)
	}
	ack, err = sc.Send(ctx, &pb.Event{Type: pb.EventType_EVENT_TYPE_BEGIN, TxnId: "t-after", SubId: 1})
	if err != nil || len(ack.GetErrors()) > 0 {
		t.Fatalf("the next batch: %v %v", ack, err)
	}
}
