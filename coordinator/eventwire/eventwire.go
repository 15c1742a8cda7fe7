package eventwire

import (
	"fmt"
	"sync"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the codec this one defers to
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Frame is a message read off a stream undecoded: RecvMsg(&frame) on a
// server that runs with ServerOption. Its buffer is gRPC's, from gRPC's
// buffer pool; Release gives it back once the message is decoded, so a
// stream keeps no buffer between messages.
type Frame struct{ buf mem.Buffer }

// Bytes is the frame read last, valid until Release.
func (f *Frame) Bytes() []byte {
	if f.buf == nil {
		return nil
	}
	return f.buf.ReadOnlyData()
}

// Release returns the frame's buffer to gRPC's pool.
func (f *Frame) Release() {
	if f.buf != nil {
		f.buf.Free()
		f.buf = nil
	}
}

// codec is gRPC's proto codec, except that it reads a *Frame undecoded.
type codec struct{ proto encoding.CodecV2 }

// Codec returns the codec ServerOption installs.
func Codec() encoding.CodecV2 { return codec{proto: encoding.GetCodecV2("proto")} }

// ServerOption makes a gRPC server use Codec for every service it serves.
func ServerOption() grpc.ServerOption { return grpc.ForceServerCodecV2(Codec()) }

func (c codec) Name() string                           { return c.proto.Name() }
func (c codec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	f, ok := v.(*Frame)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	f.Release()
	// As gRPC's proto codec does: one buffer is shared, not copied.
	f.buf = data.MaterializeToBuffer(mem.DefaultBufferPool())
	return nil
}

// Slab holds a decoded event batch: the message, and the events it points
// to. Release gives it back once nothing uses the message or its events.
type Slab struct {
	msg   pb.SidecarMessage
	kind  pb.SidecarMessage_Events
	batch pb.EventBatch
	evs   []pb.Event
	ptrs  []*pb.Event
}

// slabPoolMax is the most events a pooled slab holds; a larger batch is
// decoded into a slab of its own, left to the collector.
const slabPoolMax = 4096

var slabs = sync.Pool{New: func() any { return new(Slab) }}

// Release returns the slab to the pool. Nothing of the message it was
// returned with (events, batch) may be used after. Release of nil does
// nothing.
func (s *Slab) Release() {
	if s == nil || cap(s.evs) > slabPoolMax {
		return
	}
	s.batch.Events = nil
	slabs.Put(s)
}

// Decoder decodes a stream's messages. It is not safe for concurrent use.
type Decoder struct {
	// MaxEvents, if not 0, is the most events a message may carry: a
	// message with more is refused with an *OversizedError before any
	// event is decoded. An event can take 2 bytes on the wire and 168 in
	// memory, so a 16 MiB batch decoded would take 1.3 GiB.
	MaxEvents int

	names   map[string]string // service, version and lane names seen, each once
	lastTxn string            // the txn_id of the last event decoded
}

// OversizedError is a message with more events than Decoder.MaxEvents.
type OversizedError struct {
	Events  int    // how many it carries
	LastSeq uint64 // the last one's seq (0 if it does not decode)
}

func (e *OversizedError) Error() string {
	return fmt.Sprintf("%d events in one message", e.Events)
}

// internMax bounds the names a Decoder keeps (a stream names a few
// services, versions and lanes), and internLen the length of one.
const (
	internMax = 256
	internLen = 128
)

// Decode decodes b as a SidecarMessage, as proto.Unmarshal does. An event
// batch comes with the slab it was decoded into, to Release once applied;
// any other message with a nil slab.
func (d *Decoder) Decode(b []byte) (*pb.SidecarMessage, *Slab, error) {
	w := scan(b)
	if d.MaxEvents > 0 && w.events > d.MaxEvents {
		e := &OversizedError{Events: w.events}
		ev := new(pb.Event)
		if proto.Unmarshal(w.last, ev) == nil {
			e.LastSeq = ev.Seq
		}
		return nil, nil, e
	}
	if w.plain {
		if m, s := d.fast(w.batch, w.events); m != nil {
			return m, s, nil
		}
	}
	m := new(pb.SidecarMessage)
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, nil, fmt.Errorf("decoding SidecarMessage: %w", err)
	}
	return m, nil, nil
}

// wire is what scan read of a message without decoding it.
type wire struct {
	events int    // events in every event batch it carries (it may name the field more than once)
	last   []byte // the last event's bytes
	plain  bool   // one field, events, holding only events: fast may decode it
	batch  []byte // that field's bytes, if plain
}

// scan walks b's fields and its event batches' events on the wire, up to
// a malformed part, whose error the decoding that follows reports.
func scan(b []byte) (w wire) {
	for fields := 1; len(b) > 0; fields++ {
		num, typ, tn, n := field(b)
		if n < 0 {
			w.plain = false
			return w
		}
		w.plain = fields == 1 && num == 2 && typ == protowire.BytesType
		if num == 2 && typ == protowire.BytesType {
			batch, _ := protowire.ConsumeBytes(b[tn:])
			if w.plain {
				w.batch = batch
			}
			for len(batch) > 0 {
				num, typ, tn, n := field(batch)
				if n < 0 {
					w.plain = false
					return w
				}
				if num == 1 && typ == protowire.BytesType {
					w.events++
					w.last, _ = protowire.ConsumeBytes(batch[tn:])
				} else {
					w.plain = false
				}
				batch = batch[n:]
			}
		}
		b = b[n:]
	}
	return w
}

// field reads the first field of b: its number and wire type, the length
// of its tag and of the whole field (n < 0 if malformed).
func field(b []byte) (num protowire.Number, typ protowire.Type, tn, n int) {
	num, typ, tn = protowire.ConsumeTag(b)
	if tn < 0 {
		return 0, 0, 0, tn
	}
	vn := protowire.ConsumeFieldValue(num, typ, b[tn:])
	if vn < 0 {
		return 0, 0, 0, vn
	}
	return num, typ, tn, tn + vn
}

// fast decodes batch, the bytes of a plain message's event batch holding
// count events (scan), into a slab; it returns nil if an event is not one
// it decodes (event).
func (d *Decoder) fast(batch []byte, count int) (*pb.SidecarMessage, *Slab) {
	var s *Slab
	if count > slabPoolMax {
		s = &Slab{evs: make([]pb.Event, count)}
	} else {
		s = slabs.Get().(*Slab)
		if cap(s.evs) < count {
			s.evs = make([]pb.Event, count)
		}
	}
	s.evs = s.evs[:count]
	s.ptrs = s.ptrs[:0]
	for i := range s.evs {
		_, _, n := protowire.ConsumeTag(batch)
		v, m := protowire.ConsumeBytes(batch[n:])
		batch = batch[n+m:]
		e := &s.evs[i]
		e.Reset()
		if !d.event(v, e) {
			s.Release()
			return nil, nil
		}
		s.ptrs = append(s.ptrs, e)
	}
	s.batch.Reset()
	if count > 0 {
		s.batch.Events = s.ptrs
	}
	s.kind.Events = &s.batch
	s.msg.Reset()
	s.msg.Kind = &s.kind
	return &s.msg, s
}

// event decodes b into e (reset), or reports false where proto.Unmarshal
// must decide: a field Event does not declare or of another wire type,
// invalid UTF-8, a malformed outcome.
func (d *Decoder) event(b []byte, e *pb.Event) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			switch num {
			case 1:
				e.Seq = v
			case 2:
				e.Type = pb.EventType(int32(v))
			case 7:
				e.Wait = protowire.DecodeBool(v)
			default:
				return false
			}
		case protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			switch num {
			case 5:
				e.SubId = v
			case 6:
				e.CallerSubId = v
			default:
				return false
			}
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			b = b[n:]
			var ok bool
			switch num {
			case 3:
				e.TxnId, ok = d.txn(v)
			case 4:
				e.Service, ok = d.name(v)
			case 8:
				e.Version, ok = d.name(v)
			case 31:
				e.Lane, ok = d.name(v)
			case 30:
				// A message field repeated merges; Merge does that.
				if e.Outcome == nil {
					e.Outcome = new(pb.CallOutcome)
				}
				ok = proto.UnmarshalOptions{Merge: true}.Unmarshal(v, e.Outcome) == nil
			}
			if !ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// txn is b as a string, the last event's when equal (a transaction's
// events tend to come together).
func (d *Decoder) txn(b []byte) (string, bool) {
	if string(b) == d.lastTxn {
		return d.lastTxn, true
	}
	if !utf8.Valid(b) {
		return "", false
	}
	d.lastTxn = string(b)
	return d.lastTxn, true
}

// name is b as a string, shared with the earlier events that named it.
func (d *Decoder) name(b []byte) (string, bool) {
	if len(b) == 0 {
		return "", true
	}
	if s, ok := d.names[string(b)]; ok {
		return s, true
	}
	if !utf8.Valid(b) {
		return "", false
	}
	s := string(b)
	if len(b) <= internLen && len(d.names) < internMax {
		if d.names == nil {
			d.names = make(map[string]string)
		}
		d.names[s] = s
	}
	return s, true
}
