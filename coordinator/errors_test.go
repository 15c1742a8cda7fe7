package coordinator

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// Every sentinel, wrapped as domain code wraps it, becomes its code with the
// whole wrapped text as the message; what no sentinel matches falls back as
// documented in errors.go.
func TestToGRPCError(t *testing.T) {
	ev := &pb.Event{Type: pb.EventType_EVENT_TYPE_RETURN, TxnId: "t1", SubId: 42}
	for _, tc := range []struct {
		err  error
		code codes.Code
		msg  string
	}{
		{fmt.Errorf("%w: limit %d is more than %d", ErrInvalidArgument, 5000, 1000), codes.InvalidArgument,
			"invalid argument: limit 5000 is more than 1000"},
		{storage.ValidName("service", ""), codes.InvalidArgument, "storage: invalid name: service name is empty"},
		{fmt.Errorf("register: %w", storage.ValidName("service", "a/b")), codes.InvalidArgument,
			`register: storage: invalid name: service name "a/b" contains '/' at byte 1`},
		{eventErr(ev.Type, ev, graph.ErrInvalid), codes.InvalidArgument,
			`EVENT_TYPE_RETURN txn "t1" sub 000000000000002a: graph: invalid argument`},
		{fmt.Errorf("%w %q", ErrUnknownService, "auth"), codes.NotFound, `unknown service "auth"`},
		{fmt.Errorf("%w %q", ErrUnknownUpdate, "u1"), codes.NotFound, `unknown update "u1"`},
		{eventErr(ev.Type, ev, graph.ErrUnknownTxn), codes.NotFound, `EVENT_TYPE_RETURN txn "t1" sub 000000000000002a: graph: unknown transaction`},
		{eventErr(ev.Type, ev, graph.ErrUnknownSub), codes.NotFound, `EVENT_TYPE_RETURN txn "t1" sub 000000000000002a: graph: unknown sub-transaction`},
		{eventErr(ev.Type, ev, graph.ErrTxnExists), codes.AlreadyExists, `EVENT_TYPE_RETURN txn "t1" sub 000000000000002a: graph: transaction exists`},
		{eventErr(ev.Type, ev, graph.ErrSubExists), codes.AlreadyExists, `EVENT_TYPE_RETURN txn "t1" sub 000000000000002a: graph: sub-transaction exists`},
		{fmt.Errorf("service %q is %w by %s (phase %s)", "auth", ErrUpdateInProgress, "u1", pb.Phase_PHASE_WAITING),
			codes.FailedPrecondition, `service "auth" is already being updated by u1 (phase PHASE_WAITING)`},
		{fmt.Errorf("service %q %w %s by default", "auth", ErrAlreadyAtVersion, "v2"), codes.FailedPrecondition,
			`service "auth" already runs v2 by default`},
		{fmt.Errorf("%w of %s@%s: register the new version first", ErrNoInstance, "auth", "v2"), codes.FailedPrecondition,
			"no connected instance of auth@v2: register the new version first"},
		{fmt.Errorf("update %s %w: it is %s already", "u1", ErrUpdateEnded, pb.Phase_PHASE_DONE), codes.FailedPrecondition,
			"update u1 has ended: it is PHASE_DONE already"},
		{fmt.Errorf("%w as instance %q; open a new stream to register again", ErrAlreadyRegistered, "a-1"), codes.FailedPrecondition,
			`stream already registered as instance "a-1"; open a new stream to register again`},
		{fmt.Errorf("%w: send Register first", ErrNotRegistered), codes.FailedPrecondition,
			"coordinator: stream has no registered session: send Register first"},
		{ErrSelfPreservationInactive, codes.FailedPrecondition, "coordinator: self-preservation is not active"},
		{fmt.Errorf("%w: auth has no default version", ErrCannotRender), codes.FailedPrecondition,
			"cannot render Istio manifests: auth has no default version"},
		{fmt.Errorf("%w within %v of opening the stream", ErrNoRegister, 300*time.Millisecond), codes.DeadlineExceeded,
			"no Register within 300ms of opening the stream"},
		{fmt.Errorf("%w or dropped; register again", errTakenOver), codes.Aborted,
			"coordinator: session taken over by a newer stream or dropped; register again"},
		{fmt.Errorf("%w: outbound queue full; reconnect", errSlowSidecar), codes.ResourceExhausted,
			"coordinator: sidecar does not read its stream: outbound queue full; reconnect"},
		{fmt.Errorf("%w: store update: %w", ErrUnavailable, context.DeadlineExceeded), codes.Unavailable,
			"unavailable: store update: context deadline exceeded"},
		{fmt.Errorf("%w: register: store session: %w", ErrUnavailable, ErrFenced), codes.Unavailable,
			"unavailable: register: store session: coordinator: fenced: no longer the leader"},
		{errShuttingDown, codes.Unavailable, "coordinator: stopped: shutting down or no longer the leader"},
		{ErrFenced, codes.Unavailable, "coordinator: fenced: no longer the leader"},
		{fmt.Errorf("flush: %w", storage.ErrUnavailable), codes.Unavailable, "flush: storage: etcd unavailable"},
		{storage.ErrFenced, codes.Unavailable, "storage: fenced: leadership lost"},
		{storage.ErrClosed, codes.Unavailable, "storage: closed"},
		// No sentinel.
		{context.Canceled, codes.Canceled, "context canceled"},
		{fmt.Errorf("watch: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "watch: context deadline exceeded"},
		{status.Error(codes.Unavailable, "transport is closing"), codes.Unavailable, "transport is closing"},
		{fmt.Errorf("send: %w", status.Error(codes.Canceled, "stream ended")), codes.Canceled, "send: rpc error: code = Canceled desc = stream ended"},
		{fmt.Errorf("register: encode session: %w", errors.New("proto: bad")), codes.Internal, "register: encode session: proto: bad"},
	} {
		got := toGRPCError(tc.err)
		s, ok := status.FromError(got)
		if !ok || s.Code() != tc.code || s.Message() != tc.msg {
			t.Errorf("toGRPCError(%q) = %v, want code %v, message %q", tc.err, got, tc.code, tc.msg)
		}
		e := eventError(7, "t1", tc.err)
		if codes.Code(e.Code) != tc.code || e.Message != tc.msg || e.Seq != 7 || e.TxnId != "t1" {
			t.Errorf("eventError(%q) = %v, want code %v, message %q", tc.err, e, tc.code, tc.msg)
		}
	}
	if toGRPCError(nil) != nil {
		t.Error("toGRPCError(nil) is not nil")
	}
	// Each sentinel has exactly one entry, and a sentinel alone maps to it.
	seen := make(map[error]bool)
	for _, e := range grpcCodes {
		if seen[e.err] {
			t.Errorf("%v is in grpcCodes twice", e.err)
		}
		seen[e.err] = true
		if got := status.Code(toGRPCError(e.err)); got != e.code {
			t.Errorf("%v alone maps to %v, want %v", e.err, got, e.code)
		}
	}
	for _, err := range []error{ErrStopped, ErrNotRegistered, ErrFenced, ErrInvalidArgument, ErrUnknownService,
		ErrUnknownUpdate, ErrUpdateInProgress, ErrAlreadyAtVersion, ErrNoInstance, ErrUpdateEnded,
		ErrAlreadyRegistered, ErrNoRegister, ErrUnavailable, ErrSelfPreservationInactive, ErrCannotRender} {
		if !seen[err] {
			t.Errorf("sentinel %q has no gRPC code in grpcCodes", err)
		}
	}
}
