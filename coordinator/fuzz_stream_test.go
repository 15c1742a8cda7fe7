package coordinator_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// fuzzBytes hands out the bytes of a fuzz input; past the end, zeros.
type fuzzBytes struct {
	b []byte
	i int
}

func (f *fuzzBytes) more() bool { return f.i < len(f.b) }

func (f *fuzzBytes) byte() byte {
	if f.i >= len(f.b) {
		return 0
	}
	f.i++
	return f.b[f.i-1]
}

func (f *fuzzBytes) pick(names []string) string { return names[int(f.byte())%len(names)] }

func (f *fuzzBytes) uint64() uint64 {
	var v uint64
	for range 8 {
		v = v<<8 | uint64(f.byte())
	}
	return v
}

// The names a fuzzed stream uses: few, so that events meet (the same
// transactions, subs and services), plus some the coordinator must refuse.
var (
	fuzzServices  = []string{"a", "b", "c", "d", "", strings.Repeat("s", 300), "with space", "nul\x00"}
	fuzzVersions  = []string{"v1", "v2", "", strings.Repeat("v", 300)}
	fuzzTxns      = []string{"t0", "t1", "t2", "t3", "t4", "", strings.Repeat("t", 300), "t 5", "é"}
	fuzzInstances = []string{"fz-1", "fz-2", ""}
	validTxns     = 5 // t0..t4: the only ids the streams can make transactions of
)

// keepTxn keeps FuzzSidecarStream's CV update of d DRAINING: it used d@v1
// and its root, at x, may call d again. No fuzzed stream can name it.
const keepTxn = "keep-draining"

// sidecarMessages decodes a fuzz input into the messages of one stream.
func sidecarMessages(in *fuzzBytes) []*pb.SidecarMessage {
	var msgs []*pb.SidecarMessage
	var seq uint64
	for in.more() && len(msgs) < 64 {
		switch op := in.byte() % 8; op {
		case 0, 1: // Register
			r := &pb.Register{InstanceId: in.pick(fuzzInstances), Service: in.pick(fuzzServices), Version: in.pick(fuzzVersions),
				Address: "127.0.0.1:1", AllowedMisses: uint32(in.byte() % 4)}
			for deps := in.byte(); deps != 0; deps >>= 1 {
				if deps&1 != 0 {
					r.Dependencies = append(r.Dependencies, fuzzServices[int(deps)%len(fuzzServices)])
				}
			}
			if hb := in.byte(); hb%4 != 0 {
				r.HeartbeatInterval = durationpb.New(time.Duration(int8(hb)) * 100 * time.Millisecond) // negative too
			}
			for n := in.byte() % 4; n > 0; n-- {
				r.LiveRoots = append(r.LiveRoots, &pb.LiveRoot{TxnId: in.pick(fuzzTxns), SubId: uint64(in.byte() % 6)})
			}
			msgs = append(msgs, &pb.SidecarMessage{Kind: &pb.SidecarMessage_Register{Register: r}})
		case 2, 3, 4: // a batch of events
			var evs []*pb.Event
			for n := 1 + in.byte()%4; n > 0; n-- {
				seq++
				ev := &pb.Event{Seq: seq, Type: pb.EventType(in.byte() % 7), TxnId: in.pick(fuzzTxns),
					SubId: uint64(in.byte() % 6), CallerSubId: uint64(in.byte() % 6)}
				if x := in.byte(); x&1 != 0 {
					ev.Service = in.pick(fuzzServices)
				}
				if x := in.byte(); x&1 != 0 {
					ev.Version = in.pick(fuzzVersions)
				}
				ev.Wait = in.byte()&1 != 0
				if in.byte() == 255 {
					ev.Seq, ev.SubId = in.uint64(), in.uint64()
				}
				evs = append(evs, ev)
			}
			msgs = append(msgs, &pb.SidecarMessage{Kind: &pb.SidecarMessage_Events{Events: &pb.EventBatch{Events: evs}}})
		case 5:
			msgs = append(msgs, &pb.SidecarMessage{Kind: &pb.SidecarMessage_Heartbeat{Heartbeat: &pb.Heartbeat{}}})
		case 6:
			msgs = append(msgs, &pb.SidecarMessage{Kind: &pb.SidecarMessage_RoutingAck{RoutingAck: &pb.RoutingAck{Revision: uint64(in.byte())}}})
		default:
			if in.byte()%2 == 0 {
				msgs = append(msgs, &pb.SidecarMessage{}) // no kind
			} else {
				msgs = append(msgs, &pb.SidecarMessage{Kind: &pb.SidecarMessage_Events{Events: &pb.EventBatch{}}})
			}
		}
	}
	return msgs
}

// unclear reports whether a status code says nothing about what was wrong.
func unclear(c codes.Code) bool {
	return c == codes.Unknown || c == codes.Internal || c == codes.OK
}

// FuzzSidecarStream sends the messages decoded from a fuzz input on one
// sidecar stream to a real coordinator (embedded etcd) and checks that it
// never panics (a panic in a handler ends the test binary), that every
// refusal has a clear status (the stream's, or an event's in its Ack: not
// Unknown or Internal, with a message), that each batch and heartbeat of a
// stream that ends cleanly is answered, and that the state stays sound:
// no more live transactions than the ids the streams can name, and
// FREENESS answers for every service, with blockers that agree with the
// transactions' own "blocks".
//
// Service d is mid-update all along (CV, switched, DRAINING), so that
// fuzzed calls to it go through the update's decisions: pins, calls held
// for their BEGIN, released when their stream ends.
func FuzzSidecarStream(f *testing.F) {
	ts := servertest.Start(f, "")
	x := longLived(ts, "x-keep", "x", "v1", "d")
	longLived(ts, "d-keep-1", "d", "v1")
	longLived(ts, "d-keep-2", "d", "v2")
	servertest.Send(f, x, simsidecar.Begin(keepTxn, 1), simsidecar.Call(keepTxn, 1, "d", 2), simsidecar.Return(keepTxn, 2))
	u, err := ts.Admin.StartUpdate(context.Background(), &pb.StartUpdateRequest{Service: "d", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV})
	if err != nil {
		f.Fatal(err)
	}
	servertest.Eventually(f, 10*time.Second, "the switch of d", func() bool {
		g, err := ts.Admin.GetUpdate(context.Background(), &pb.GetUpdateRequest{Id: u.Id})
		return err == nil && g.Phase == pb.Phase_PHASE_DRAINING
	})
	for _, seed := range [][]byte{
		{},
		{0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 1, 0, 1, 1, 0, 0, 0, 0},                // register, BEGIN t0
		{0, 0, 0, 0, 0, 1, 0, 0, 2, 1, 2, 0, 1, 2, 1, 1, 1, 1, 0, 0, 5, 6, 1}, // register, CALL, heartbeat, ack
		{5, 2, 0, 1, 0, 1, 0, 0, 0, 0, 7, 0, 7, 1},                            // before register: heartbeat, events, empty
		{0, 1, 1, 0, 3, 200, 2, 0, 1, 0, 1, 0, 0, 0, 0},                       // a bad register
		{0, 0, 0, 0, 0xff, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6},                // register twice
		// Register fz-1 as a@v1 calling d and b; BEGIN t0 (sub 1), which
		// calls d (sub 2) and waits for the decision: d is mid-update.
		{0, 0, 0, 0, 0, 3, 0, 0, 2, 1, 1, 0, 1, 0, 0, 0, 0, 0, 2, 0, 2, 1, 1, 3, 0, 1, 0},
		// The same call of t1, whose BEGIN never comes: held, then dropped
		// with its stream.
		{0, 0, 0, 0, 0, 3, 0, 0, 2, 0, 2, 1, 2, 1, 1, 3, 0, 1, 0},
		// t2 begins, calls d, says done with d, returns, ends.
		{0, 0, 0, 0, 0, 3, 0, 0, 2, 3, 1, 2, 1, 0, 0, 0, 0, 0, 2, 2, 2, 1, 1, 3, 0, 1, 0,
			4, 2, 1, 0, 1, 3, 0, 0, 0, 3, 2, 2, 0, 0, 0, 0, 0, 5, 2, 0, 0, 0, 0, 0, 0},
		[]byte("a stream of whatever the fuzzer finds: events, registers, heartbeats and acks"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs := sidecarMessages(&fuzzBytes{b: data})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		stream, err := pb.NewSidecarServiceClient(ts.Conn).Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var (
			mu                       sync.Mutex
			acks, hbAcks, registered int
			decisions                int
			end                      error
			sent                     [][]uint64 // the seqs of each batch sent, in order
		)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				m, err := stream.Recv()
				if err != nil {
					mu.Lock()
					end = err
					mu.Unlock()
					return
				}
				mu.Lock()
				switch k := m.Kind.(type) {
				case *pb.CoordinatorMessage_Ack:
					var seqs []uint64
					if acks < len(sent) {
						seqs = sent[acks]
					} else {
						t.Errorf("ack %d of %d batches sent: %v", acks+1, len(sent), k.Ack)
					}
					acks++
					for _, e := range k.Ack.Errors {
						if unclear(codes.Code(e.Code)) || e.Message == "" {
							t.Errorf("event seq %d (%s) refused with code %v %q", e.Seq, e.TxnId, codes.Code(e.Code), e.Message)
						}
						if !slices.Contains(seqs, e.Seq) {
							t.Errorf("error for seq %d in the ack of a batch of seqs %v", e.Seq, seqs)
						}
					}
					for _, l := range k.Ack.Late {
						if l.Reason == pb.LateReason_LATE_REASON_UNSPECIFIED || !slices.Contains(seqs, l.Seq) {
							t.Errorf("late event %v in the ack of a batch of seqs %v", l, seqs)
						}
					}
					if len(k.Ack.Errors)+len(k.Ack.Late) > len(seqs) {
						t.Errorf("ack of %d events reports %d errors and %d late", len(seqs), len(k.Ack.Errors), len(k.Ack.Late))
					}
				case *pb.CoordinatorMessage_HeartbeatAck:
					hbAcks++
				case *pb.CoordinatorMessage_Registered:
					registered++
				case *pb.CoordinatorMessage_CallDecision:
					decisions++
					if d := k.CallDecision; d.Error == "" && d.Version != "v1" && d.Version != "v2" {
						t.Errorf("call decision %v names neither a version that can register (v1, v2) nor an error", d)
					}
				}
				mu.Unlock()
			}
		}()
		var batches, heartbeats, waits int
		for _, m := range msgs {
			if b, ok := m.Kind.(*pb.SidecarMessage_Events); ok {
				var seqs []uint64
				for _, ev := range b.Events.Events {
					seqs = append(seqs, ev.Seq)
					if ev.Wait {
						waits++
					}
				}
				mu.Lock()
				sent = append(sent, seqs)
				mu.Unlock()
			}
			if err := stream.Send(m); err != nil {
				break // the coordinator ended the stream: Recv says why
			}
			switch m.Kind.(type) {
			case *pb.SidecarMessage_Events:
				batches++
			case *pb.SidecarMessage_Heartbeat:
				heartbeats++
			}
		}
		// A decision comes once its pin is committed: give the calls that
		// wait a moment before the stream ends (ending it drops those still
		// waiting; a call held for its BEGIN waits longer than this).
		for deadline := time.Now().Add(100 * time.Millisecond); waits > 0 && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			mu.Lock()
			n, over := decisions, end != nil
			mu.Unlock()
			if n >= waits || over {
				break
			}
		}
		_ = stream.CloseSend()
		select {
		case <-done:
		case <-ctx.Done():
			t.Fatalf("the stream did not end after CloseSend: %d messages sent", len(msgs))
		}
		mu.Lock()
		defer mu.Unlock()
		if errors.Is(end, io.EOF) {
			if acks != batches || hbAcks != heartbeats {
				t.Fatalf("stream ended cleanly with %d acks for %d batches, %d heartbeat acks for %d heartbeats", acks, batches, hbAcks, heartbeats)
			}
		} else if s := status.Convert(end); unclear(s.Code()) || s.Message() == "" {
			t.Fatalf("stream ended with %v %q: not a clear status", s.Code(), s.Message())
		}
		checkState(t, ts, u.Id)
	})
}

// checkState checks what the admin API says after a fuzzed stream: the
// update of d still DRAINING, at most validTxns live transactions besides
// keepTxn, and for each service a FREENESS answer
// whose blockers are the transactions that say they block it. Reads of the
// two are not atomic (a session may expire between them): a mismatch must
// persist over three reads to fail.
func checkState(t *testing.T, ts testServer, update string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if g, err := ts.AdminClient().GetUpdate(ctx, &pb.GetUpdateRequest{Id: update}); err != nil || g.Phase != pb.Phase_PHASE_DRAINING {
		t.Fatalf("the update of d: %v, %v; want DRAINING while %s lives", g.GetPhase(), err, keepTxn)
	}
	var why string
	for range 3 {
		why = ""
		txns, err := ts.AdminClient().ListTransactions(ctx, &pb.ListTransactionsRequest{Limit: 1000})
		if err != nil {
			t.Fatalf("ListTransactions: %v", err)
		}
		if txns.Total > uint32(validTxns)+1 || len(txns.Transactions) != int(txns.Total) {
			t.Fatalf("%d live transactions (%d listed); the streams can name only %d, and %s", txns.Total, len(txns.Transactions), validTxns, keepTxn)
		}
		for _, svc := range fuzzServices[:4] {
			fr, err := ts.AdminClient().GetFreeness(ctx, &pb.GetFreenessRequest{Service: svc, Limit: 1000})
			if status.Code(err) == codes.NotFound {
				continue // never registered
			}
			if err != nil {
				t.Fatalf("freeness of %s: %v", svc, err)
			}
			var blockers, blocks []string
			for _, b := range fr.Blockers {
				blockers = append(blockers, b.TxnId)
			}
			for _, x := range txns.Transactions {
				if slices.Contains(x.Blocks, svc) {
					blocks = append(blocks, x.TxnId)
				}
			}
			slices.Sort(blockers)
			slices.Sort(blocks)
			if fr.Free != (fr.Blocking == 0) || int(fr.Blocking) != len(fr.Blockers) || !slices.Equal(blockers, blocks) {
				why = svc + ": freeness " + fr.String() + "; transactions that block it: " + strings.Join(blocks, ",")
			}
		}
		if why == "" {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal(why)
}
