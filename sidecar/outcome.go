package sidecar

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Outcome is how a call ended, reported with its RETURN so that a canary
// update's analysis (DESIGN.md §4.7) can compare the versions: its class
// (ok, client error, server error), the HTTP status or gRPC code, and the
// latency from the call's routing to its answer. Transport and the gRPC
// client connection report it for you.
type Outcome struct {
	Class   pb.OutcomeClass
	Code    uint32
	Latency time.Duration
}

// HTTPOutcome is the outcome of an HTTP call answered with status (err
// nil), or that got no answer (err), measured now: 5xx and no answer are
// server errors, except a call its caller canceled (a client error).
func (call Call) HTTPOutcome(status int, err error) Outcome {
	o := Outcome{Code: uint32(max(status, 0)), Latency: call.sinceRouted()}
	switch {
	case err != nil && errors.Is(err, context.Canceled):
		o.Class, o.Code = pb.OutcomeClass_OUTCOME_CLASS_CLIENT_ERROR, 0
	case err != nil || status >= 500 || status < 100:
		o.Class = pb.OutcomeClass_OUTCOME_CLASS_SERVER_ERROR
	case status >= 400:
		o.Class = pb.OutcomeClass_OUTCOME_CLASS_CLIENT_ERROR
	default:
		o.Class = pb.OutcomeClass_OUTCOME_CLASS_OK
	}
	return o
}

// GRPCOutcome is the outcome of a gRPC call that ended with err (nil:
// OK), measured now. Codes that say the request was wrong are client
// errors; the rest (Unknown, DeadlineExceeded, ResourceExhausted, Aborted,
// Unimplemented, Internal, Unavailable, DataLoss) are server errors.
func (call Call) GRPCOutcome(err error) Outcome {
	code := status.Code(err)
	o := Outcome{Code: uint32(code), Latency: call.sinceRouted()}
	switch code {
	case codes.OK:
		o.Class = pb.OutcomeClass_OUTCOME_CLASS_OK
	case codes.Canceled, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied,
		codes.FailedPrecondition, codes.OutOfRange, codes.Unauthenticated:
		o.Class = pb.OutcomeClass_OUTCOME_CLASS_CLIENT_ERROR
	default:
		o.Class = pb.OutcomeClass_OUTCOME_CLASS_SERVER_ERROR
	}
	return o
}

func (call Call) sinceRouted() time.Duration {
	if call.routed.IsZero() {
		return 0
	}
	return time.Since(call.routed)
}

// FinishWith is Finish, reporting the call's outcome too. The outcome is
// sent for calls the coordinator decided (their service is being updated:
// only then can an analysis use it); otherwise it is Finish.
func (call Call) FinishWith(o Outcome) {
	if call.c == nil {
		return
	}
	ev := &pb.Event{Type: pb.EventType_EVENT_TYPE_RETURN, TxnId: call.TxnID, SubId: call.Sub}
	if call.Decided {
		ev.Outcome = &pb.CallOutcome{Class: o.Class, Code: o.Code, Latency: durationpb.New(o.Latency)}
	}
	_ = call.c.enqueue(ev)
}
