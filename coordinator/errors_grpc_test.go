package coordinator_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// errorsHarness is a coordinator served on its own gRPC server (no replica
// gate in between), on the memory store (memharness_test.go), which the
// test can fence.
type errorsHarness struct {
	conn  *grpc.ClientConn
	admin pb.AdminServiceClient
	// unfence makes every later write fail its fence.
	unfence func(context.Context) error
}

func startErrorsHarness(t *testing.T) *errorsHarness {
	t.Helper()
	m := startMem(t, func(c *coordinator.Config) { c.RegisterTimeout = 300 * time.Millisecond })
	unfence := func(context.Context) error { m.Store.Fence(); return nil }
	return &errorsHarness{conn: m.Conn, admin: m.Admin, unfence: unfence}
}

func (h *errorsHarness) sidecar(t *testing.T, instance, svc, version string, deps ...string) *simsidecar.Sidecar {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sc, _, err := simsidecar.Connect(ctx, h.conn, &pb.Register{
		InstanceId: instance, Service: svc, Version: version, Address: "127.0.0.1:1", Dependencies: deps,
		HeartbeatInterval: durationpb.New(500 * time.Millisecond), AllowedMisses: 1,
	})
	if err != nil {
		t.Fatalf("register %s: %v", instance, err)
	}
	t.Cleanup(sc.Close)
	return sc
}

// stream opens a raw sidecar stream, sends msgs and returns how the stream
// ended (nil if it did not end within 10 s).
func (h *errorsHarness) stream(t *testing.T, msgs ...*pb.SidecarMessage) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := pb.NewSidecarServiceClient(h.conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if err := st.Send(m); err != nil {
			break // the stream ended; Recv says how
		}
	}
	for {
		if _, err := st.Recv(); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

func register(id, svc string, hb time.Duration) *pb.SidecarMessage {
	return &pb.SidecarMessage{Kind: &pb.SidecarMessage_Register{Register: &pb.Register{
		InstanceId: id, Service: svc, Version: "v1", HeartbeatInterval: durationpb.New(hb)}}}
}

// wantStatus checks an error's gRPC code, and its message: equal to msg, or
// starting with it when msg ends in "...".
func wantStatus(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	s, _ := status.FromError(err)
	ok := s.Code() == code
	if prefix, cut := strings.CutSuffix(msg, "..."); cut {
		ok = ok && strings.HasPrefix(s.Message(), prefix)
	} else {
		ok = ok && s.Message() == msg
	}
	if !ok {
		t.Errorf("%s: %v, want %v %q", what, err, code, msg)
	}
}

func wantEventError(t *testing.T, what string, sc *simsidecar.Sidecar, ev *pb.Event, code codes.Code, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := sc.Send(ctx, ev)
	if err != nil {
		t.Fatalf("%s: send: %v", what, err)
	}
	if len(ack.Errors) != 1 {
		t.Errorf("%s: ack errors %v, want one", what, ack.Errors)
		return
	}
	wantStatus(t, what, status.Error(codes.Code(ack.Errors[0].Code), ack.Errors[0].Message), code, msg)
}

// A domain error of each sentinel reaches a gRPC client (admin calls, the
// sidecar stream, and event errors in an Ack) with the code errors.go maps
// it to and the domain's message.
func TestDomainErrorsReachGRPCClients(t *testing.T) {
	h := startErrorsHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := h.sidecar(t, "a-1", "a", "v1", "b")
	h.sidecar(t, "a-2", "a", "v2", "b")
	b := h.sidecar(t, "b-1", "b", "v1", "c")
	h.sidecar(t, "b-2", "b", "v2", "c")
	h.sidecar(t, "c-1", "c", "v1")
	// T runs at a and called b: a is not free, a WF update of a waits.
	if ack, err := a.Send(ctx, simsidecar.Begin("T", 1), simsidecar.Call("T", 1, "b", 2)); err != nil || len(ack.Errors) != 0 {
		t.Fatalf("begin T: %v %v", ack, err)
	}

	// Admin requests.
	_, err := h.admin.GetGraph(ctx, &pb.GetGraphRequest{TxnLimit: 5000})
	wantStatus(t, "ErrInvalidArgument", err, codes.InvalidArgument, "invalid argument: txn_limit 5000 is more than 1000")
	_, err = h.admin.ListSessions(ctx, &pb.ListSessionsRequest{Service: "a/b"})
	wantStatus(t, "storage.ErrInvalidName", err, codes.InvalidArgument, `storage: invalid name: service name "a/b" contains '/' at byte 1`)
	_, err = h.admin.GetFreeness(ctx, &pb.GetFreenessRequest{Service: "nope"})
	wantStatus(t, "ErrUnknownService", err, codes.NotFound, `unknown service "nope"`)
	_, err = h.admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: "nope"})
	wantStatus(t, "ErrUnknownUpdate", err, codes.NotFound, `unknown update "nope"`)
	_, err = h.admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "a", ToVersion: "v1", Strategy: pb.Strategy_STRATEGY_WF})
	wantStatus(t, "ErrAlreadyAtVersion", err, codes.FailedPrecondition, `service "a" already runs v1 by default`)
	_, err = h.admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "a", ToVersion: "v9", Strategy: pb.Strategy_STRATEGY_WF})
	wantStatus(t, "ErrNoInstance", err, codes.FailedPrecondition, "no connected instance of a@v9: register the new version first")
	u, err := h.admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "a", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_WF})
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "a", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_WF})
	wantStatus(t, "ErrUpdateInProgress", err, codes.FailedPrecondition, `service "a" is already being updated by `+u.Id+" (phase ...")
	if _, err := h.admin.AbortUpdate(ctx, &pb.AbortUpdateRequest{Id: u.Id}); err != nil {
		t.Fatal(err)
	}
	_, err = h.admin.AbortUpdate(ctx, &pb.AbortUpdateRequest{Id: u.Id})
	wantStatus(t, "ErrUpdateEnded", err, codes.FailedPrecondition, "update "+u.Id+" has ended: it is PHASE_ABORTED already")
	_, err = h.admin.EndSelfPreservation(ctx, &pb.EndSelfPreservationRequest{})
	wantStatus(t, "ErrSelfPreservationInactive", err, codes.FailedPrecondition, "coordinator: self-preservation is not active")

	// Events, answered in the Ack.
	wantEventError(t, "ErrInvalidArgument (event)", a, simsidecar.Begin("", 1), codes.InvalidArgument, "invalid argument: txn_id is empty")
	wantEventError(t, "storage.ErrInvalidName (event)", a, simsidecar.Call("T", 1, "a/b", 9), codes.InvalidArgument,
		`CALL: storage: invalid name: service name "a/b" contains '/' at byte 1`)
	wantEventError(t, "graph.ErrInvalid", a, simsidecar.Return("T", 1), codes.InvalidArgument,
		`EVENT_TYPE_RETURN txn "T" sub 0000000000000001: graph: invalid argument`)
	wantEventError(t, "graph.ErrNotOwner", b, simsidecar.Call("T", 1, "c", 5), codes.PermissionDenied,
		`EVENT_TYPE_CALL txn "T" sub 0000000000000005: graph: the sub-transaction runs at another service`)
	wantEventError(t, "ErrNotOwner", b, simsidecar.End("T"), codes.PermissionDenied,
		`not the session's to send: END txn "T": it is not a root of instance "b-1"`)
	wantEventError(t, "graph.ErrUnknownTxn", a, simsidecar.End("nope"), codes.NotFound,
		`EVENT_TYPE_END txn "nope" sub 0000000000000000: graph: unknown transaction`)
	wantEventError(t, "graph.ErrUnknownSub", a, simsidecar.Return("T", 42), codes.NotFound,
		`EVENT_TYPE_RETURN txn "T" sub 000000000000002a: graph: unknown sub-transaction`)
	wantEventError(t, "graph.ErrTxnExists", a, simsidecar.Begin("T", 1), codes.AlreadyExists,
		`EVENT_TYPE_BEGIN txn "T" sub 0000000000000001: graph: transaction exists`)
	wantEventError(t, "graph.ErrSubExists", a, simsidecar.Call("T", 1, "b", 2), codes.AlreadyExists,
		`EVENT_TYPE_CALL txn "T" sub 0000000000000002: graph: sub-transaction exists`)

	// The sidecar stream.
	err = h.stream(t, register("x-1", "", time.Second))
	wantStatus(t, "storage.ErrInvalidName (register)", err, codes.InvalidArgument, "register: storage: invalid name: service name is empty")
	err = h.stream(t, register("x-1", "x", time.Millisecond))
	wantStatus(t, "ErrInvalidArgument (register)", err, codes.InvalidArgument,
		"invalid argument: register: heartbeat_interval 1ms is outside [100ms, 10m0s]")
	err = h.stream(t, &pb.SidecarMessage{})
	wantStatus(t, "ErrInvalidArgument (stream)", err, codes.InvalidArgument, "invalid argument: empty sidecar message")
	err = h.stream(t)
	wantStatus(t, "ErrNoRegister", err, codes.DeadlineExceeded, "no Register within 300ms of opening the stream")
	err = h.stream(t, &pb.SidecarMessage{Kind: &pb.SidecarMessage_Heartbeat{Heartbeat: &pb.Heartbeat{}}})
	wantStatus(t, "ErrNotRegistered", err, codes.FailedPrecondition, "coordinator: stream has no registered session: heartbeat before register")
	err = h.stream(t, register("y-1", "y", time.Second), register("y-1", "y", time.Second))
	wantStatus(t, "ErrAlreadyRegistered", err, codes.FailedPrecondition,
		`stream already registered as instance "y-1"; open a new stream to register again`)
	first := h.sidecar(t, "z-1", "z", "v1")
	h.sidecar(t, "z-1", "z", "v1") // takes the session over
	select {
	case <-first.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the first stream of z-1 was not ended")
	}
	wantStatus(t, "errTakenOver", first.Err(), codes.Aborted, "coordinator: session taken over by a newer stream or dropped; register again")

	// Etcd refuses the coordinator's writes (its fence is gone): the
	// request fails Unavailable, and what was running ends Unavailable.
	u, err = h.admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "a", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_WF})
	if err != nil {
		t.Fatal(err)
	}
	watch, err := h.admin.WatchUpdate(ctx, &pb.WatchUpdateRequest{Id: u.Id})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	if err := h.unfence(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = h.admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "b", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV})
	wantStatus(t, "ErrUnavailable (ErrFenced)", err, codes.Unavailable, "unavailable: store update: coordinator: fenced: no longer the leader")
	for err = nil; err == nil; _, err = watch.Recv() {
	}
	wantStatus(t, "ErrStopped (watch)", err, codes.Unavailable, "coordinator: stopped: shutting down or no longer the leader")
	select {
	case <-a.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a sidecar stream did not end with the coordinator")
	}
	wantStatus(t, "ErrStopped (stream)", a.Err(), codes.Unavailable, "coordinator: stopped: shutting down or no longer the leader")
}
