package sidecar

import (
	"context"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// fromMetadata is fromHeaders for gRPC metadata (lower-case keys).
func fromMetadata(md metadata.MD) (txn string, sub uint64) {
	first := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	h := map[string][]string{}
	for _, k := range []string{HeaderRequestID, HeaderTraceparent, HeaderB3Trace, HeaderSub} {
		if v := first(k); v != "" {
			h[canonical(k)] = []string{v}
		}
	}
	return fromHeaders(h)
}

// canonical is the http.Header key of a lower-case header name.
func canonical(k string) string {
	b := []byte(k)
	upper := true
	for i, c := range b {
		if upper && 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
		upper = c == '-'
	}
	return string(b)
}

// serverContext joins or begins the transaction of an inbound RPC; end is
// called when the RPC is over.
func (c *Client) serverContext(ctx context.Context) (context.Context, func()) {
	md, _ := metadata.FromIncomingContext(ctx)
	txn, sub := fromMetadata(md)
	if sub != 0 {
		return c.Join(ctx, txn, sub), func() {}
	}
	ctx, t := c.BeginWith(ctx, txn)
	return ctx, func() { c.End(t) }
}

// UnaryServerInterceptor joins the transaction of an inbound unary RPC, or
// begins one at the entry.
func UnaryServerInterceptor(c *Client) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, end := c.serverContext(ctx)
		defer end()
		return handler(ctx, req)
	}
}

// StreamServerInterceptor does the same for streaming RPCs.
func StreamServerInterceptor(c *Client) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, end := c.serverContext(ss.Context())
		defer end()
		return handler(srv, &wrappedStream{ServerStream: ss, ctx: ctx})
	}
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w *wrappedStream) Context() context.Context { return w.ctx }

// Conn returns a connection to service whose calls are routed like
// Transport's requests: each call goes to an endpoint of the version the
// client chooses (asking the coordinator while the service is being
// updated), carries the transaction in its metadata, and reports its
// return. A call whose context has no transaction goes to an endpoint of
// the default version. Connections to endpoints are kept and reused.
func (c *Client) Conn(service string, opts ...grpc.DialOption) grpc.ClientConnInterface {
	return &routedConn{c: c, service: service, opts: opts, conns: map[string]*grpc.ClientConn{}}
}

type routedConn struct {
	c       *Client
	service string
	opts    []grpc.DialOption
	mu      sync.Mutex
	conns   map[string]*grpc.ClientConn
}

func (r *routedConn) conn(addr string) (*grpc.ClientConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cc := r.conns[addr]; cc != nil {
		return cc, nil
	}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, r.opts...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	r.conns[addr] = cc
	return cc, nil
}

// route picks the endpoint and decorates ctx; finish reports the return.
func (r *routedConn) route(ctx context.Context) (context.Context, *grpc.ClientConn, func(), error) {
	if _, ok := FromContext(ctx); !ok {
		tab := r.c.routing.Load()
		var rt *route
		if tab != nil {
			rt = tab.services[r.service]
		}
		call := Call{}
		if rt != nil {
			call.Version = rt.defaultVersion
		}
		if err := r.c.pick(&call, rt); err != nil {
			return nil, nil, nil, err
		}
		cc, err := r.conn(call.Address)
		return ctx, cc, func() {}, err
	}
	call, err := r.c.Route(ctx, r.service)
	if err != nil {
		return nil, nil, nil, err
	}
	cc, err := r.conn(call.Address)
	if err != nil {
		call.Finish()
		return nil, nil, nil, err
	}
	ctx = metadata.AppendToOutgoingContext(ctx,
		HeaderRequestID, call.Txn,
		HeaderSub, fmt.Sprintf("%016x", call.Sub),
		HeaderTraceparent, "00-"+traceHex(call.Txn)+"-"+fmt.Sprintf("%016x", call.Sub)+"-01")
	return ctx, cc, call.Finish, nil
}

func (r *routedConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	ctx, cc, finish, err := r.route(ctx)
	if err != nil {
		return err
	}
	defer finish()
	return cc.Invoke(ctx, method, args, reply, opts...)
}

// NewStream routes a streaming call; its return is reported when the
// stream ends (RecvMsg returns an error, io.EOF included).
func (r *routedConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx, cc, finish, err := r.route(ctx)
	if err != nil {
		return nil, err
	}
	s, err := cc.NewStream(ctx, desc, method, opts...)
	if err != nil {
		finish()
		return nil, err
	}
	return &finishStream{ClientStream: s, finish: finish}, nil
}

type finishStream struct {
	grpc.ClientStream
	once   sync.Once
	finish func()
}

func (s *finishStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		s.once.Do(s.finish)
	}
	return err
}
