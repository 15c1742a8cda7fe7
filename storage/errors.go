package storage

import (
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	// ErrInvalidName wraps every error of ValidName.
	ErrInvalidName = errors.New("storage: invalid name")
	// ErrLeaseExpired means etcd no longer knows a lease: it expired or was
	// revoked, and the keys attached to it are gone.
	ErrLeaseExpired = errors.New("storage: lease expired")
	// ErrFenced means a write-behind transaction's fence compare failed:
	// this process no longer holds the election key and must not write.
	ErrFenced = errors.New("storage: fenced: leadership lost")
	// ErrUnavailable wraps the cause when etcd cannot serve a linearizable
	// read (no quorum, no leader, unreachable) or has an alarm raised.
	ErrUnavailable = errors.New("storage: etcd unavailable")
	// ErrClosed is returned by calls on a closed Leases or Cache.
	ErrClosed = errors.New("storage: closed")
	// ErrRefused means the store refused a transaction as invalid (too
	// many ops, too large, two ops on one key, an op that could not be
	// encoded): retrying it unchanged cannot succeed.
	ErrRefused = errors.New("storage: transaction refused")
	// ErrChanged means a conditional write found its record changed since
	// it was read (Store.Quarantine).
	ErrChanged = errors.New("storage: record changed")
)

// isLeaseNotFound reports whether err is etcd's "requested lease not
// found", as the client returns it (rpctypes.ErrLeaseNotFound) or as a raw
// gRPC status.
func isLeaseNotFound(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, rpctypes.ErrLeaseNotFound) || errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) {
		return true
	}
	return rpctypes.ErrorDesc(err) == rpctypes.ErrorDesc(rpctypes.ErrGRPCLeaseNotFound)
}

// errCode returns the gRPC code of an etcd error, codes.Unknown if none.
func errCode(err error) codes.Code {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code()
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return codes.Unknown
}
