// Package eventwire owns how the coordinator reads the sidecar stream off
// the wire: a gRPC codec that hands a stream's frames over undecoded
// (Frame) and behaves as gRPC's own proto codec for every other message,
// and a Decoder of SidecarMessage that decodes event batches into pooled
// event structs.
//
// Why: under load the coordinator's largest allocation was the event
// structs protobuf decoding allocates, one per event (about 160 bytes, half
// of all it allocated in bench/ingest -update-cycle), each garbage once its
// batch is applied. The Decoder decodes a batch into a slab of events taken
// from a pool, and the stream's handler gives the slab back once the batch
// is applied. Whatever the fast decoder does not recognise as a plain
// event batch (another kind of message, unknown fields, a field repeated
// as a message merges, invalid UTF-8, a malformed frame) goes to
// proto.Unmarshal, so every message decodes exactly as protobuf decodes it
// (FuzzDecodeMatchesProto).
//
// A Decoder with MaxEvents counts a message's events on the wire first and
// refuses one with more (OversizedError) before decoding any: an event can
// take 2 bytes on the wire and 168 in memory.
//
// The server must run with ServerOption for a handler to read Frames.
package eventwire
