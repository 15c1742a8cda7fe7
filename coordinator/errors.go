package coordinator

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/identity"
	"github.com/coordinator/coordinator/storage"
)

// Errors.
//
// Domain code in this package returns plain Go errors: one of the sentinels
// below (or of package graph or storage), wrapped with %w in a message that
// names what was wrong, for example
//
//	fmt.Errorf("%w %q", ErrUnknownService, name)       // unknown service "auth"
//	fmt.Errorf("%w: update id is empty", ErrInvalidArgument)
//
// It never builds a gRPC status. The sentinels' texts are written to read
// inside such messages. The gRPC handlers (the AdminService methods and the
// sidecar stream, edge.go) turn an error into a status once, with
// toGRPCError: the code comes from the first entry of grpcCodes the error
// matches (errors.Is), the message is the error's whole text. Event errors
// in an Ack get their code the same way.
//
//	sentinel                                   code
//	ErrInvalidArgument, storage.ErrInvalidName,
//	  graph.ErrInvalid                         InvalidArgument
//	ErrUnknownService, ErrUnknownUpdate,
//	  graph.ErrUnknownTxn, graph.ErrUnknownSub NotFound
//	graph.ErrTxnExists, graph.ErrSubExists     AlreadyExists
//	ErrUpdateInProgress, ErrAlreadyAtVersion,
//	  ErrNoInstance, ErrUpdateEnded,
//	  ErrAlreadyRegistered, ErrNotRegistered,
//	  ErrSelfPreservationInactive,
//	  ErrCannotRender                          FailedPrecondition
//	ErrNoRegister                              DeadlineExceeded
//	ErrNotOwner, graph.ErrNotOwner,
//	  ErrNotAllowed, identity.ErrNotAllowed    PermissionDenied
//	errTakenOver                               Aborted
//	errSlowSidecar, ErrQuota                   ResourceExhausted
//	ErrUnavailable, ErrStopped, ErrFenced,
//	  storage.ErrUnavailable, storage.ErrFenced,
//	  storage.ErrClosed                        Unavailable
//
// Errors no entry matches:
//   - context.Canceled and context.DeadlineExceeded become Canceled and
//     DeadlineExceeded, as gRPC itself reports a call whose context ended
//     (the caller's stream or call ended). A store operation that fails,
//     an internal timeout of an etcd call included, is wrapped in
//     ErrUnavailable by the code that called etcd, so the client retries it
//     (and does not read it as its own deadline).
//   - an error that is a gRPC status already (from the stream's Send or Recv)
//     passes unchanged.
//   - anything else is a bug or a failure the client cannot act on:
//     Internal, with the error's text.
var (
	// ErrStopped is returned by operations on a coordinator that is stopping:
	// its replica shuts down or no longer leads. Unavailable: retry, the
	// replicas send the caller to the leader.
	ErrStopped = errors.New("coordinator: stopped")
	// ErrNotRegistered is returned for events on a stream without a session.
	ErrNotRegistered = errors.New("coordinator: stream has no registered session")
	// ErrFenced is returned by a write whose fence compare failed: the
	// election key it was conditional on is gone, this replica no longer
	// leads, and the coordinator has stopped acting.
	ErrFenced = errors.New("coordinator: fenced: no longer the leader")

	// ErrInvalidArgument: a request, a Register or an event that is
	// malformed whatever the state (a bad limit, duration, strategy, id).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrCannotRender: the service's state makes no Istio manifests (no
	// default version yet, a version that makes no subset name).
	ErrCannotRender = errors.New("cannot render Istio manifests")
	// ErrUnknownService: no sidecar ever registered the named service.
	ErrUnknownService = errors.New("unknown service")
	// ErrUnknownUpdate: no update has the given id.
	ErrUnknownUpdate = errors.New("unknown update")
	// ErrUpdateInProgress: the service is being updated already.
	ErrUpdateInProgress = errors.New("already being updated")
	// ErrAlreadyAtVersion: the service already runs the requested version
	// by default; there is nothing to update.
	ErrAlreadyAtVersion = errors.New("already runs")
	// ErrNoInstance: no connected instance runs the version asked for.
	ErrNoInstance = errors.New("no connected instance")
	// ErrUpdateEnded: the update was aborted or has finished already.
	ErrUpdateEnded = errors.New("has ended")
	// ErrAlreadyRegistered: a stream sent a second Register.
	ErrAlreadyRegistered = errors.New("stream already registered")
	// ErrNoRegister: a stream sent no Register within RegisterTimeout.
	ErrNoRegister = errors.New("no Register")
	// ErrQuota: a session's event (or the coordinator's total) went past a
	// quota; the message names the quota, the use and the limit, and the
	// event changed nothing (quota.go).
	ErrQuota = errors.New("quota exceeded")
	// ErrNotOwner: a session's event is about what another session owns
	// (DESIGN.md §3, "sent by"): a RETURN of a sub-transaction its service
	// did not call, an END of a transaction another session began. It
	// changes nothing. graph.ErrNotOwner is the engine's own case (a CALL
	// or DONE about a sub-transaction at another service).
	ErrNotOwner = errors.New("not the session's to send")
	// ErrNotAllowed: a sidecar's workload identity may not do what it asked:
	// register as a service its policy does not give it, or take over an
	// instance id another identity holds. It changes nothing.
	ErrNotAllowed = errors.New("not allowed")
	// ErrUnavailable: etcd did not take or answer a read or write the
	// request needs (unreachable, timed out, or this replica was fenced);
	// the request may be retried.
	ErrUnavailable = errors.New("unavailable")
)

// errShuttingDown ends a call or stream of a coordinator whose term is over.
var errShuttingDown = fmt.Errorf("%w: shutting down or no longer the leader", ErrStopped)

// grpcCodes maps the sentinels to gRPC codes; the first match wins.
var grpcCodes = []struct {
	err  error
	code codes.Code
}{
	{ErrInvalidArgument, codes.InvalidArgument},
	{storage.ErrInvalidName, codes.InvalidArgument},
	{graph.ErrInvalid, codes.InvalidArgument},
	{ErrUnknownService, codes.NotFound},
	{ErrUnknownUpdate, codes.NotFound},
	{graph.ErrUnknownTxn, codes.NotFound},
	{graph.ErrUnknownSub, codes.NotFound},
	{graph.ErrTxnExists, codes.AlreadyExists},
	{graph.ErrSubExists, codes.AlreadyExists},
	{ErrUpdateInProgress, codes.FailedPrecondition},
	{ErrAlreadyAtVersion, codes.FailedPrecondition},
	{ErrNoInstance, codes.FailedPrecondition},
	{ErrUpdateEnded, codes.FailedPrecondition},
	{ErrNotInCanary, codes.FailedPrecondition},
	{ErrUnknownLane, codes.NotFound},
	{ErrLaneExists, codes.AlreadyExists},
	{ErrTooManyLanes, codes.ResourceExhausted},
	{ErrLanePromoting, codes.FailedPrecondition},
	{ErrAlreadyRegistered, codes.FailedPrecondition},
	{ErrNotRegistered, codes.FailedPrecondition},
	{ErrNoRegister, codes.DeadlineExceeded},
	{ErrSelfPreservationInactive, codes.FailedPrecondition},
	{ErrCannotRender, codes.FailedPrecondition},
	{errTakenOver, codes.Aborted},
	{errSlowSidecar, codes.ResourceExhausted},
	{ErrQuota, codes.ResourceExhausted},
	{ErrNotOwner, codes.PermissionDenied},
	{graph.ErrNotOwner, codes.PermissionDenied},
	{ErrNotAllowed, codes.PermissionDenied},
	{identity.ErrNotAllowed, codes.PermissionDenied},
	{ErrUnavailable, codes.Unavailable},
	{ErrStopped, codes.Unavailable},
	{ErrFenced, codes.Unavailable},
	{storage.ErrUnavailable, codes.Unavailable},
	{storage.ErrFenced, codes.Unavailable},
	{storage.ErrClosed, codes.Unavailable},
}

// toGRPCError turns an error of this package into the gRPC status a client
// gets (see Errors above); nil stays nil.
func toGRPCError(err error) error {
	if err == nil {
		return nil
	}
	for _, e := range grpcCodes {
		if errors.Is(err, e.err) {
			return status.Error(e.code, err.Error())
		}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.Error(status.FromContextError(err).Code(), err.Error())
	}
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	return status.Error(codes.Internal, err.Error())
}

// eventError reports the error of the event at seq in an Ack, with the
// code toGRPCError gives it.
func eventError(seq uint64, txn string, err error) *pb.EventError {
	s := status.Convert(toGRPCError(err))
	return &pb.EventError{Seq: seq, Code: int32(s.Code()), Message: s.Message(), TxnId: txn}
}
