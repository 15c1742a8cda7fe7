package sidecar_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/sidecar"
)

// backend is a real gRPC service (part of the generated AdminService) that
// reports the transaction each call ran in; GetFreeness waits for gate
// when the request's limit is 1.
type backend struct {
	pb.UnimplementedAdminServiceServer
	seen chan sidecar.Txn
	gate chan struct{}
}

func (b *backend) GetFreeness(ctx context.Context, req *pb.GetFreenessRequest) (*pb.Freeness, error) {
	tx, _ := sidecar.FromContext(ctx)
	b.seen <- tx
	if req.Limit == 1 {
		<-b.gate
	}
	return &pb.Freeness{Service: "backend"}, nil
}

func (b *backend) WatchUpdate(_ *pb.WatchUpdateRequest, s pb.AdminService_WatchUpdateServer) error {
	tx, _ := sidecar.FromContext(s.Context())
	b.seen <- tx
	for i := range 2 {
		if err := s.Send(&pb.Update{Id: fmt.Sprint(i)}); err != nil {
			return err
		}
	}
	return nil
}

// gRPC calls through Client.Conn carry the transaction to the server
// interceptors, which join it as the sub-transaction the caller reported;
// unary and streaming calls are reported as running until they return. A
// call that comes with B3 metadata joins too, and one without any is an
// entry.
func TestGRPCConnAndInterceptors(t *testing.T) {
	ts := servertest.Start(t, "")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := startClient(t, ts, sidecar.Config{InstanceID: "backend-1", Service: "backend", Version: "v1", Address: lis.Addr().String()})
	b := &backend{seen: make(chan sidecar.Txn, 1), gate: make(chan struct{})}
	gs := grpc.NewServer(grpc.UnaryInterceptor(sidecar.UnaryServerInterceptor(server.Client)),
		grpc.StreamInterceptor(sidecar.StreamServerInterceptor(server.Client)))
	pb.RegisterAdminServiceServer(gs, b)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)

	front := startClient(t, ts, sidecar.Config{InstanceID: "front-1", Service: "front", Version: "v1", Dependencies: []string{"backend"}})
	api := pb.NewAdminServiceClient(front.Conn("backend"))
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	tctx, root := front.Begin(ctx)

	// Unary, held in the handler while the coordinator is checked.
	unary := make(chan error, 1)
	go func() {
		_, err := api.GetFreeness(tctx, &pb.GetFreenessRequest{Limit: 1})
		unary <- err
	}()
	got := <-b.seen
	if got.ID != root.ID || got.Sub == 0 || got.Sub == root.Sub {
		t.Fatalf("backend ran as %s/%016x, want a new sub-transaction of %s", got.ID, got.Sub, root.ID)
	}
	servertest.Eventually(t, within, "the call at the coordinator", func() bool {
		return slices.Equal(running(txn(ts, root.ID)), subs("front", root.Sub, "backend", got.Sub))
	})
	close(b.gate)
	if err := <-unary; err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, within, "the unary call's return", func() bool {
		x := txn(ts, root.ID)
		return slices.Equal(running(x), subs("front", root.Sub)) && slices.Equal(used(x), []string{"backend@v1", "front@v1"})
	})

	// Server streaming: finished when the stream ends.
	stream, err := api.WatchUpdate(tctx, &pb.WatchUpdateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := <-b.seen; got.ID != root.ID || got.Sub == root.Sub {
		t.Fatalf("backend's stream ran as %s/%016x, want a sub-transaction of %s", got.ID, got.Sub, root.ID)
	}
	n := 0
	for {
		if _, err := stream.Recv(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("%d messages, want 2", n)
	}
	servertest.Eventually(t, within, "the stream's return", func() bool {
		return slices.Equal(running(txn(ts, root.ID)), subs("front", root.Sub))
	})

	// A caller (a sidecar proxy) that sets the mesh metadata itself, on a
	// connection of its own: joined.
	raw, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	call, err := front.Route(tctx, "backend")
	if err != nil {
		t.Fatal(err)
	}
	mctx := metadata.AppendToOutgoingContext(ctx, sidecar.HeaderTxn, root.ID, sidecar.HeaderSub, fmt.Sprintf("%016x", call.Sub))
	if _, err := pb.NewAdminServiceClient(raw).GetFreeness(mctx, &pb.GetFreenessRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := <-b.seen; got.ID != root.ID || got.Sub != call.Sub {
		t.Fatalf("backend ran as %s/%016x, want %s/%016x", got.ID, got.Sub, root.ID, call.Sub)
	}
	call.Finish()

	// B3 or traceparent metadata alone (a caller outside the mesh), even
	// naming the live transaction: an entry, the outside id its
	// correlation.
	for _, kv := range [][]string{
		{"x-b3-traceid", root.ID, "x-b3-spanid", fmt.Sprintf("%016x", call.Sub)},
		{"traceparent", "00-" + root.ID + "-" + fmt.Sprintf("%016x", call.Sub) + "-01", sidecar.HeaderSub, fmt.Sprintf("%016x", call.Sub)},
	} {
		mctx := metadata.AppendToOutgoingContext(ctx, kv...)
		if _, err := pb.NewAdminServiceClient(raw).GetFreeness(mctx, &pb.GetFreenessRequest{}); err != nil {
			t.Fatal(err)
		}
		if got := <-b.seen; len(got.ID) != 32 || got.ID == root.ID || got.Correlation != root.ID {
			t.Fatalf("%s alone: backend ran as %q (correlation %q), want a new root correlated with %s", kv[0], got.ID, got.Correlation, root.ID)
		}
	}
	if err := front.End(tctx); err != nil {
		t.Fatal(err)
	}

	// No transaction: an entry at backend, begun and ended there. Through
	// Conn it goes to the default version, unreported by front.
	for _, c := range []grpc.ClientConnInterface{raw, front.Conn("backend")} {
		if _, err := pb.NewAdminServiceClient(c).GetFreeness(ctx, &pb.GetFreenessRequest{}); err != nil {
			t.Fatal(err)
		}
		if got := <-b.seen; len(got.ID) != 32 || got.ID == root.ID {
			t.Fatalf("entry ran as %q, want a new transaction", got.ID)
		}
	}
	servertest.Eventually(t, within, "every transaction to end", func() bool { return ts.Txns("").Total == 0 })
	noRejections(t, front, server)
	servertest.Eventually(t, within, "backend's 8 events acked: BEGIN and END of 4 entries", func() bool { return server.Stats().Acked == 8 })
	if st := front.Stats(); st.Acked != 8 {
		t.Fatalf("front's stats = %+v, want 8 events: BEGIN, 3 CALLs, 3 RETURNs, END", st)
	}
}
