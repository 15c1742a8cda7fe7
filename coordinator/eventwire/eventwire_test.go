package eventwire

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func batchMsg(evs ...*pb.Event) *pb.SidecarMessage {
	return &pb.SidecarMessage{Kind: &pb.SidecarMessage_Events{Events: &pb.EventBatch{Events: evs}}}
}

// seeds are messages of every kind the decoder meets, and the odd ones it
// must leave to proto.Unmarshal.
func seeds(t testing.TB) [][]byte {
	full := &pb.Event{Seq: 7, Type: pb.EventType_EVENT_TYPE_CALL, TxnId: "t-1", Service: "auth", SubId: 9,
		CallerSubId: 3, Wait: true, Version: "v2", Lane: "blue",
		Outcome: &pb.CallOutcome{}}
	out := [][]byte{
		marshal(t, batchMsg()),
		marshal(t, batchMsg(&pb.Event{Seq: 1, Type: pb.EventType_EVENT_TYPE_BEGIN, TxnId: "t-1", SubId: 1})),
		marshal(t, batchMsg(full, &pb.Event{Seq: 8, Type: pb.EventType_EVENT_TYPE_END, TxnId: "t-1"})),
		marshal(t, &pb.SidecarMessage{Kind: &pb.SidecarMessage_Heartbeat{Heartbeat: &pb.Heartbeat{}}}),
		marshal(t, &pb.SidecarMessage{Kind: &pb.SidecarMessage_Register{Register: &pb.Register{
			InstanceId: "i", Service: "s", Version: "v1", Dependencies: []string{"d"}}}}),
		marshal(t, &pb.SidecarMessage{Kind: &pb.SidecarMessage_Deregister{Deregister: &pb.Deregister{Reason: "bye"}}}),
	}
	// An event with an unknown field; an event batch repeated (batches
	// merge); an enum past int32; invalid UTF-8; an outcome twice.
	ev := marshal(t, &pb.Event{Seq: 2, TxnId: "x"})
	unknown := protowire.AppendTag(append([]byte(nil), ev...), 99, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 5)
	out = append(out, wrap(wrapEvents(unknown)))
	one := wrapEvents(ev)
	out = append(out, append(wrap(one), wrap(one)...))
	big := protowire.AppendTag(nil, 2, protowire.VarintType)
	big = protowire.AppendVarint(big, 1<<40+3)
	out = append(out, wrap(wrapEvents(big)))
	bad := protowire.AppendTag(nil, 3, protowire.BytesType)
	bad = protowire.AppendBytes(bad, []byte{0xff, 'a'})
	out = append(out, wrap(wrapEvents(bad)))
	oc := marshal(t, &pb.Event{Outcome: &pb.CallOutcome{}})
	out = append(out, wrap(wrapEvents(append(append([]byte(nil), oc...), oc...))))
	out = append(out, []byte{0x12, 0x05, 0x0a}, []byte{0x00}, nil)
	return out
}

// wrapEvents is an EventBatch of the encoded events.
func wrapEvents(evs ...[]byte) []byte {
	var b []byte
	for _, e := range evs {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	return b
}

// wrap is a SidecarMessage of the encoded batch.
func wrap(batch []byte) []byte {
	b := protowire.AppendTag(nil, 2, protowire.BytesType)
	return protowire.AppendBytes(b, batch)
}

// check decodes b with d and with proto.Unmarshal and fails unless both
// fail or both give equal messages.
func check(t *testing.T, d *Decoder, b []byte) (*pb.SidecarMessage, *Slab) {
	t.Helper()
	want := new(pb.SidecarMessage)
	werr := proto.Unmarshal(b, want)
	got, s, err := d.Decode(b)
	if (err != nil) != (werr != nil) {
		t.Fatalf("decode %x: error %v, proto.Unmarshal's %v", b, err, werr)
	}
	if err != nil {
		return nil, nil
	}
	if !proto.Equal(got, want) {
		t.Fatalf("decode %x:\n got %v\nwant %v", b, got, want)
	}
	return got, s
}

// FuzzDecodeMatchesProto: any bytes decode as proto.Unmarshal decodes
// them, and a slab reused for a later message keeps nothing of the one
// before (three decodes in a row, the first released before the third).
func FuzzDecodeMatchesProto(f *testing.F) {
	ss := seeds(f)
	for i, a := range ss {
		f.Add(a, ss[(i+1)%len(ss)], ss[(i+2)%len(ss)])
	}
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		var d Decoder
		_, sa := check(t, &d, a)
		_, sb := check(t, &d, b)
		sa.Release()
		_, sc := check(t, &d, c)
		sb.Release()
		sc.Release()
	})
}

// TestSlabReuseKeepsNothing: a batch decoded into a reused slab has none
// of the fields of the batch before it, and the fast path took it.
func TestSlabReuseKeepsNothing(t *testing.T) {
	var d Decoder
	rich := &pb.Event{Seq: 1, Type: pb.EventType_EVENT_TYPE_CALL, TxnId: "t", Service: "s", SubId: 2, CallerSubId: 1,
		Wait: true, Version: "v2", Lane: "l", Outcome: &pb.CallOutcome{}}
	for range 50 {
		m, s := check(t, &d, marshal(t, batchMsg(rich, rich, rich)))
		if s == nil {
			t.Fatalf("an event batch came without a slab: not the fast path (%v)", m)
		}
		s.Release()
		m, s = check(t, &d, marshal(t, batchMsg(&pb.Event{Seq: 2, TxnId: "u"})))
		if s == nil {
			t.Fatal("no slab")
		}
		s.Release()
	}
}

// TestDecodeAllocates: a batch of 512 events into a pooled slab allocates
// no event struct: only the transaction ids that differ from the event
// before (names are shared within the stream).
func TestDecodeAllocates(t *testing.T) {
	var evs []*pb.Event
	for i := range 512 {
		evs = append(evs, &pb.Event{Seq: uint64(i + 1), Type: pb.EventType_EVENT_TYPE_CALL,
			TxnId: fmt.Sprintf("txn-%d", i/4), Service: "svc-b", SubId: uint64(i + 2), CallerSubId: 1, Version: "v1"})
	}
	b := marshal(t, batchMsg(evs...))
	var d Decoder
	allocs := testing.AllocsPerRun(100, func() {
		m, s, err := d.Decode(b)
		if err != nil || len(m.GetEvents().GetEvents()) != 512 {
			t.Fatalf("decode: %v", err)
		}
		s.Release()
	})
	// 128 transaction ids; protobuf's decoding allocates 512 events, 512
	// pointers' growth and 1,536 strings here.
	if allocs > 128+8 {
		t.Fatalf("%.0f allocations a batch of 512 events, want at most 136", allocs)
	}
}

// TestCodecFrames: the codec hands a *Frame the message's bytes and
// decodes anything else as gRPC's proto codec does.
func TestCodecFrames(t *testing.T) {
	c := Codec()
	if c.Name() != "proto" {
		t.Fatalf("name %q", c.Name())
	}
	m := batchMsg(&pb.Event{Seq: 1, TxnId: "t", SubId: 1, Type: pb.EventType_EVENT_TYPE_BEGIN})
	data, err := c.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Free()
	var f Frame
	if err := c.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.Bytes(), marshal(t, m)) {
		t.Fatalf("frame %x", f.Bytes())
	}
	got := new(pb.SidecarMessage)
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(f.Bytes())}, got); err != nil || !proto.Equal(got, m) {
		t.Fatalf("proto decode: %v %v", got, err)
	}
	f.Release()
	if f.Bytes() != nil {
		t.Fatal("a released frame keeps its bytes")
	}
}

// TestOversizedRefusedBeforeDecoding: a message with more events than
// MaxEvents is refused with their count and the last seq, without
// decoding them (a few allocations, not one per event), wherever the
// events field appears; MaxEvents events decode as usual.
func TestOversizedRefusedBeforeDecoding(t *testing.T) {
	const max = 1000
	var evs [][]byte
	for i := range max + 1 {
		evs = append(evs, marshal(t, &pb.Event{Seq: uint64(i + 1)}))
	}
	d := Decoder{MaxEvents: max}
	if m, _, err := d.Decode(wrap(wrapEvents(evs[:max]...))); err != nil || len(m.GetEvents().GetEvents()) != max {
		t.Fatalf("%d events: %v", max, err)
	}
	// One batch of max+1; two batches of half each plus a heartbeat
	// between them and an unknown field (not the fast path).
	hb := marshal(t, &pb.SidecarMessage{Kind: &pb.SidecarMessage_Heartbeat{Heartbeat: &pb.Heartbeat{}}})
	split := append(append(append(wrap(wrapEvents(evs[:500]...)), hb...), wrap(wrapEvents(evs[500:]...))...),
		protowire.AppendVarint(protowire.AppendTag(nil, 90, protowire.VarintType), 1)...)
	for name, b := range map[string][]byte{"one batch": wrap(wrapEvents(evs...)), "split": split} {
		var over *OversizedError
		if _, _, err := d.Decode(b); !errors.As(err, &over) || over.Events != max+1 || over.LastSeq != max+1 {
			t.Fatalf("%s: %v, want %d events refused, last seq %d", name, err, max+1, max+1)
		}
		if n := testing.AllocsPerRun(20, func() { _, _, _ = d.Decode(b) }); n > 8 {
			t.Fatalf("%s: %.0f allocations to refuse it, want a few", name, n)
		}
	}
}
