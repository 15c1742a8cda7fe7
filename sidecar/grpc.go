package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// incoming returns the first value of a metadata key of ctx's inbound call.
func incoming(ctx context.Context) func(string) string {
	md, _ := metadata.FromIncomingContext(ctx)
	return func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
}

// UnaryServerInterceptor is Middleware for unary RPCs: an RPC whose
// metadata carries the mesh headers joins the transaction they name, any
// other is an entry and runs as a new root transaction until the handler
// returns. Options as for Middleware.
func UnaryServerInterceptor(c *Client, opts ...InboundOption) grpc.UnaryServerInterceptor {
	ic := c.inboundConfig(opts)
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx = ic.stripIncoming(c, ctx)
		ctx, end := c.inbound(ctx, incoming(ctx))
		defer end()
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streaming RPCs.
func StreamServerInterceptor(c *Client, opts ...InboundOption) grpc.StreamServerInterceptor {
	ic := c.inboundConfig(opts)
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ic.stripIncoming(c, ss.Context())
		ctx, end := c.inbound(ctx, incoming(ctx))
		defer end()
		return handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
	}
}

// stripIncoming removes the mesh headers from ctx's incoming metadata when
// the interceptor strips them.
func (ic inboundConfig) stripIncoming(c *Client, ctx context.Context) context.Context {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ic.strip || !ok || !hasMeshHeader(incoming(ctx)) {
		return ctx
	}
	c.lg.Debug("mesh headers stripped from an RPC to an entry point")
	md = md.Copy()
	for _, h := range meshHeaders {
		md.Delete(h)
	}
	return metadata.NewIncomingContext(ctx, md)
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// Conn returns a connection to service for generated gRPC clients
// (pb.NewFooClient(c.Conn("foo"))) that routes every call like Transport
// routes a request: a call whose context carries a transaction goes to an
// endpoint chosen by Route, with the transaction in its metadata, and is
// finished when it returns (a stream: when it ends or its context does); a
// call without one goes to an endpoint of the default version, unreported.
// Connections to endpoints are dialled with opts (insecure transport
// credentials by default) the first time they are needed, shared by every
// Conn of the client, and closed by Close.
//
// There is deliberately no client interceptor for connections dialled to
// a fixed address: such a call cannot go to the version the coordinator
// decides, and reporting it would tell the coordinator it ran where it may
// not have.
func (c *Client) Conn(service string, opts ...grpc.DialOption) grpc.ClientConnInterface {
	return &routedConn{c: c, service: service, opts: opts}
}

type routedConn struct {
	c       *Client
	service string
	opts    []grpc.DialOption
}

func (r *routedConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	ctx, cc, finish, err := r.route(ctx)
	if err != nil {
		return err
	}
	err = cc.Invoke(ctx, method, args, reply, opts...)
	finish(err)
	return err
}

func (r *routedConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx, cc, finish, err := r.route(ctx)
	if err != nil {
		return nil, err
	}
	finish = onceErr(finish)
	s, err := cc.NewStream(ctx, desc, method, opts...)
	if err != nil {
		finish(err)
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { finish(ctx.Err()) })
	return &clientStream{ClientStream: s, unary: !desc.ServerStreams, finish: func(err error) { stop(); finish(err) }}, nil
}

// onceErr is sync.OnceFunc for a finish that takes the call's error.
func onceErr(f func(error)) func(error) {
	var once sync.Once
	return func(err error) { once.Do(func() { f(err) }) }
}

// route picks the endpoint of a call and puts the transaction in its
// metadata; finish reports its return, with the outcome its error says.
func (r *routedConn) route(ctx context.Context) (_ context.Context, _ *grpc.ClientConn, finish func(error), err error) {
	var addr string
	finish = func(error) {}
	if _, ok := FromContext(ctx); ok {
		call, err := r.c.Route(ctx, r.service)
		if err != nil {
			return nil, nil, nil, err
		}
		md, _ := metadata.FromOutgoingContext(ctx)
		md = md.Copy()
		call.propagate(func(k, v string) { md.Set(k, v) })
		ctx, addr = metadata.NewOutgoingContext(ctx, md), call.Address
		finish = func(err error) { call.FinishWith(call.GRPCOutcome(err)) }
	} else {
		rt := r.c.routing.Load().lookup(r.service)
		if rt == nil {
			// Without a transaction there is no CALL to ask with: only
			// the services of this one's routing scope are known here.
			return nil, nil, nil, fmt.Errorf("%w: %q is not in the routing scope", ErrUnknownService, r.service)
		}
		if addr, err = rt.pick(rt.defaultVersion); err != nil {
			return nil, nil, nil, fmt.Errorf("route to %s: %w", r.service, err)
		}
	}
	cc, err := r.c.endpointConn(addr, r.opts)
	if err != nil {
		finish(err)
		return nil, nil, nil, err
	}
	return ctx, cc, finish, nil
}

// endpointConn returns the client's connection to an endpoint, dialling it
// the first time.
func (c *Client) endpointConn(addr string, opts []grpc.DialOption) (*grpc.ClientConn, error) {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	if c.conns == nil {
		return nil, ErrClosed
	}
	if cc := c.conns[addr]; cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("sidecar: dial %s: %w", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
}

// clientStream finishes its call when the stream ends: RecvMsg fails (at
// the end, io.EOF), or returns the only response of a stream whose server
// does not stream.
type clientStream struct {
	grpc.ClientStream
	unary  bool
	finish func(error)
}

func (s *clientStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil || s.unary {
		if errors.Is(err, io.EOF) {
			s.finish(nil) // the stream ended well
		} else {
			s.finish(err)
		}
	}
	return err
}
