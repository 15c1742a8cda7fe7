package adminauth

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Mode says whom a gRPC server's admin interceptors trust.
type Mode int

const (
	// Public: a listener anyone may reach. Callers authenticate by client
	// certificate or bearer token; a forwarded principal is accepted from
	// a replica's certificate only.
	Public Mode = iota
	// Internal: the REST gateway's own in-process server, which nothing
	// but the gateway can reach. The principal in the metadata (put there
	// by GatewayMetadata after the HTTP middleware authenticated the
	// request) is trusted. Never use it on a listener others can reach:
	// the trust comes from this flag, not from the peer's address.
	Internal
)

func (m Mode) String() string {
	if m == Internal {
		return "internal"
	}
	return "public"
}

// ServerOptions are the interceptors of a gRPC server in mode m.
func (a *Authenticator) ServerOptions(m Mode) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(a.UnaryServerInterceptor(m)),
		grpc.ChainStreamInterceptor(a.StreamServerInterceptor(m)),
	}
}

// admit authenticates and authorizes one admin call; the returned context
// carries the principal. A refusal is audited and counted here.
func (a *Authenticator) admit(ctx context.Context, m Mode, method string) (context.Context, Principal, *callNote, error) {
	auth := a.authenticateGRPC
	if m == Internal {
		auth = a.authenticateInternal
	}
	p, tok, err := auth(ctx)
	if err == nil {
		err = authorize(p, method)
	}
	if err != nil {
		reason := reasonForbidden
		var forged forgedError
		switch {
		case errors.As(err, &forged):
			reason = reasonForgedForward
			a.lg.Warn("forwarded principal refused", "peer", forged.who, "method", method)
		case status.Code(err) == codes.Unauthenticated:
			reason = reasonUnauthenticated
		}
		a.refusals.WithLabelValues(reason).Inc()
		level := slog.LevelDebug // refused reads are counted, not audited
		if Mutating(method) {
			level = slog.LevelInfo
		}
		a.audit(level, p, method, err)
		return ctx, p, nil, err
	}
	note := &callNote{}
	ctx = context.WithValue(NewContext(withCredential(ctx, tok), p), noteKey{}, note)
	return ctx, p, note, nil
}

// done audits a mutating call that was admitted, once it ended: at info on
// the replica that executed it, at debug on one that forwarded it.
func (a *Authenticator) done(p Principal, note *callNote, method string, err error) {
	if !Mutating(method) {
		return
	}
	level := slog.LevelInfo
	if note.forwarded {
		level = slog.LevelDebug
	}
	a.audit(level, p, method, err)
}

// audit writes the audit line of an admin call: who, via, method, result.
func (a *Authenticator) audit(level slog.Level, p Principal, method string, err error) {
	who := p.Name
	if who == "" {
		who = "unknown"
	}
	via := p.Via
	if via == "" {
		via = "none"
	}
	attrs := []slog.Attr{slog.String("who", who), slog.String("via", via), slog.String("method", method),
		slog.String("result", status.Code(err).String())}
	if p.Role > NoRole {
		attrs = append(attrs, slog.String("role", p.Role.String()))
	}
	if p.ForwardedBy != "" {
		attrs = append(attrs, slog.String("forwarded_by", p.ForwardedBy), slog.String("origin_via", p.OriginVia))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
	}
	a.lg.LogAttrs(context.Background(), level, "audit", attrs...)
}

// UnaryServerInterceptor applies admin roles to AdminService calls and
// server reflection (Guarded), and leaves every other service alone.
func (a *Authenticator) UnaryServerInterceptor(m Mode) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if !Guarded(info.FullMethod) {
			return h(ctx, req)
		}
		ctx, p, note, err := a.admit(ctx, m, info.FullMethod)
		if err != nil {
			return nil, err
		}
		resp, err := h(ctx, req)
		a.done(p, note, info.FullMethod, err)
		return resp, err
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams.
func (a *Authenticator) StreamServerInterceptor(m Mode) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if !Guarded(info.FullMethod) {
			return h(srv, ss)
		}
		ctx, p, note, err := a.admit(ss.Context(), m, info.FullMethod)
		if err != nil {
			return err
		}
		err = h(srv, &ctxStream{ServerStream: ss, ctx: ctx})
		a.done(p, note, info.FullMethod, err)
		return err
	}
}

type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// WithToken returns a grpc.DialOption that sends "authorization: Bearer
// token" with every call (coordctl --token). It does not require
// transport security: on loopback, plaintext is what the default
// configuration is.
func WithToken(tok string) grpc.DialOption {
	return grpc.WithPerRPCCredentials(tokenCreds(tok))
}

type tokenCreds string

func (t tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (tokenCreds) RequireTransportSecurity() bool { return false }
