package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/sidecar"
)

// within bounds every wait of the tests.
const within = 30 * time.Second

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("COORDINATOR_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// startProxy runs coordsidecar in process for service@version in front of
// app, registered with ts; every listener on a loopback port the kernel
// picks. It shuts down at cleanup.
func startProxy(t *testing.T, ts *servertest.Server, service, version, app string, deps []dependency, adjust ...func(*config)) *proxy {
	t.Helper()
	cfg := defaults()
	cfg.Coordinators = []string{ts.GRPCAddr()}
	cfg.Service, cfg.Version, cfg.App = service, version, app
	cfg.Listen, cfg.Admin = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Dependencies = deps
	cfg.Grace = duration(5 * time.Second)
	for _, f := range adjust {
		f(&cfg)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	p, err := start(ctx, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.shutdown(context.Background()); err != nil {
			t.Errorf("shutdown %s: %v", service, err)
		}
	})
	return p
}

// listenerAddr returns the bound address of p's listener name.
func (p *proxy) listenerAddr(name string) string {
	for _, l := range append(p.data, p.admin) {
		if l.name == name {
			return l.addr()
		}
	}
	panic("no listener " + name)
}

// serveApp serves h on loopback, HTTP/1.1 and h2c, until cleanup.
func serveApp(t *testing.T, h http.Handler) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: &protos, ReadHeaderTimeout: within}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return lis.Addr().String()
}

// callDep calls the dependency listener dep as an application does that
// copies only the mesh's headers from its inbound request r to the call
// (and sets extra ones); if the call fails it answers w with 502 and
// returns false.
func callDep(w http.ResponseWriter, r *http.Request, dep string, extra http.Header) bool {
	req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+dep+"/", nil)
	req.Header.Set(sidecar.HeaderTxn, r.Header.Get(sidecar.HeaderTxn)) // the mesh headers only
	req.Header.Set(sidecar.HeaderSub, r.Header.Get(sidecar.HeaderSub))
	for k, vs := range extra {
		req.Header[k] = vs
	}
	resp, err := clientFor(1).Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return true
}

// seenRequest is what an application received.
type seenRequest struct {
	method, uri, host string
	protoMajor        int
	header            http.Header
	body              []byte
	trailer           http.Header
}

// echoApp records every request it gets and answers 201 with the body it
// read, a header and a trailer.
type echoApp struct {
	mu   sync.Mutex
	seen []seenRequest
}

func (a *echoApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.seen = append(a.seen, seenRequest{method: r.Method, uri: r.RequestURI, host: r.Host, protoMajor: r.ProtoMajor,
		header: r.Header.Clone(), body: body, trailer: r.Trailer.Clone()})
	a.mu.Unlock()
	w.Header().Set("Trailer", "X-App-Trailer")
	w.Header().Set("X-App-Reply", "reply")
	w.Header().Add("X-App-Multi", "1")
	w.Header().Add("X-App-Multi", "2")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(body)
	w.Header().Set("X-App-Trailer", fmt.Sprintf("%d bytes", len(body)))
}

func (a *echoApp) last(t *testing.T) seenRequest {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.seen) == 0 {
		t.Fatal("the application got no request")
	}
	return a.seen[len(a.seen)-1]
}

// grpcApp is a real gRPC TestService: unary, server, client and
// bidirectional streaming. It sends every request's x-app-* metadata back
// in its header and trailer, and records the metadata it got.
type grpcApp struct {
	testpb.UnimplementedTestServiceServer
	mu sync.Mutex
	md []metadata.MD
}

func (g *grpcApp) echoMD(ctx context.Context, header, trailer func(metadata.MD) error) {
	md, _ := metadata.FromIncomingContext(ctx)
	g.mu.Lock()
	g.md = append(g.md, md.Copy())
	g.mu.Unlock()
	out := metadata.MD{}
	for k, v := range md {
		if len(k) > 6 && k[:6] == "x-app-" {
			out[k] = v
		}
	}
	_ = header(out)
	_ = trailer(metadata.Join(out, metadata.Pairs("x-app-trailer", "done")))
}

func (g *grpcApp) lastMD() metadata.MD {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.md[len(g.md)-1]
}

func (g *grpcApp) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	g.echoMD(ctx, func(md metadata.MD) error { return grpc.SetHeader(ctx, md) }, func(md metadata.MD) error { return grpc.SetTrailer(ctx, md) })
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: bytes.ToUpper(req.GetPayload().GetBody())}}, nil
}

func (g *grpcApp) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, s testpb.TestService_StreamingOutputCallServer) error {
	g.echoMD(s.Context(), s.SetHeader, func(md metadata.MD) error { s.SetTrailer(md); return nil })
	for _, p := range req.GetResponseParameters() {
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: bytes.Repeat([]byte{'x'}, int(p.GetSize()))}}); err != nil {
			return err
		}
	}
	return nil
}

func (g *grpcApp) StreamingInputCall(s testpb.TestService_StreamingInputCallServer) error {
	g.echoMD(s.Context(), s.SetHeader, func(md metadata.MD) error { s.SetTrailer(md); return nil })
	var n int32
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return s.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: n})
		}
		if err != nil {
			return err
		}
		n += int32(len(m.GetPayload().GetBody()))
	}
}

func (g *grpcApp) FullDuplexCall(s testpb.TestService_FullDuplexCallServer) error {
	g.echoMD(s.Context(), s.SetHeader, func(md metadata.MD) error { s.SetTrailer(md); return nil })
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: bytes.ToUpper(m.GetPayload().GetBody())}}); err != nil {
			return err
		}
	}
}

// serveGRPC serves g on loopback until cleanup.
func serveGRPC(t *testing.T, g *grpcApp) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, g)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}
