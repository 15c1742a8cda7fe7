package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"regexp"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/sidecar"
)

var (
	txnIDRe = regexp.MustCompile(`^[0-9a-f]{32}$`)
	subRe   = regexp.MustCompile(`^[0-9a-f]{16}$`)
)

// clientFor returns an HTTP client speaking only HTTP/1.1 or only h2c
// (prior knowledge), with no proxy.
func clientFor(major int) *http.Client {
	var protos http.Protocols
	if major == 2 {
		protos.SetUnencryptedHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	return &http.Client{Transport: &http.Transport{Protocols: &protos, DisableCompression: true}}
}

// An HTTP/1.1 and an h2c request through both legs (a's dependency
// listener for b, then b's inbound) reach b's application with the same
// method, URI, Host, headers, trailers and body, plus the mesh headers;
// hop-by-hop headers go. The response comes back with its status,
// headers, trailers and body intact.
func TestHTTPAndH2CThroughBothLegs(t *testing.T) {
	ts := servertest.Start(t, "")
	app := &echoApp{}
	startProxy(t, ts, "b", "v1", serveApp(t, app), nil)
	a := startProxy(t, ts, "a", "v1", serveApp(t, &echoApp{}), []dependency{{Service: "b", Listen: "127.0.0.1:0"}})
	depB := a.listenerAddr("dep-b")
	body := make([]byte, 1<<20)
	_, _ = rand.Read(body)

	for _, major := range []int{1, 2} {
		t.Run(map[int]string{1: "http1", 2: "h2c"}[major], func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), within)
			defer cancel()
			// A reader of unknown length: the body is streamed (chunked in
			// HTTP/1.1), and may carry a trailer.
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+depB+"/echo/path?x=1&y=%2F", io.MultiReader(bytes.NewReader(body)))
			if err != nil {
				t.Fatal(err)
			}
			req.Header["X-Custom"] = []string{"one", "two"}
			req.Header.Set("X-Forwarded-For", "203.0.113.7")
			req.Header.Set("User-Agent", "test-agent/1")
			req.Header.Set("Content-Type", "application/octet-stream")
			req.Header.Set("Cookie", "k=v")
			if major == 1 {
				req.Header.Set("Connection", "X-Hop")
				req.Header.Set("X-Hop", "for the next hop only")
			}
			req.Trailer = http.Header{"X-Req-Trailer": {"sent after the body"}}
			resp, err := clientFor(major).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusCreated || !bytes.Equal(got, body) {
				t.Fatalf("response %s with %d bytes, want 201 with the %d bytes sent", resp.Status, len(got), len(body))
			}
			if resp.Header.Get("X-App-Reply") != "reply" || !slices.Equal(resp.Header["X-App-Multi"], []string{"1", "2"}) {
				t.Fatalf("response headers %v", resp.Header)
			}
			if tr := resp.Trailer.Get("X-App-Trailer"); tr != "1048576 bytes" {
				t.Fatalf("response trailer %q, want %q", tr, "1048576 bytes")
			}

			seen := app.last(t)
			if seen.method != http.MethodPost || seen.uri != "/echo/path?x=1&y=%2F" || seen.host != depB || seen.protoMajor != major {
				t.Fatalf("the application got %s %s (Host %s, HTTP/%d), want POST /echo/path?x=1&y=%%2F (Host %s, HTTP/%d)",
					seen.method, seen.uri, seen.host, seen.protoMajor, depB, major)
			}
			if !bytes.Equal(seen.body, body) {
				t.Fatalf("the application got %d bytes, not the %d sent", len(seen.body), len(body))
			}
			for _, h := range []string{"X-Custom", "X-Forwarded-For", "User-Agent", "Content-Type", "Cookie"} {
				if !slices.Equal(seen.header[h], req.Header[h]) {
					t.Errorf("header %s = %q, want %q", h, seen.header[h], req.Header[h])
				}
			}
			if v := seen.header.Get("X-Hop"); v != "" {
				t.Errorf("hop-by-hop header X-Hop passed: %q", v)
			}
			if v := seen.trailer.Get("X-Req-Trailer"); v != "sent after the body" {
				t.Errorf("request trailer %q", v)
			}
			if !txnIDRe.MatchString(seen.header.Get(sidecar.HeaderTxn)) || !subRe.MatchString(seen.header.Get(sidecar.HeaderSub)) {
				t.Errorf("mesh headers %q %q", seen.header.Get(sidecar.HeaderTxn), seen.header.Get(sidecar.HeaderSub))
			}
		})
	}
	servertest.Eventually(t, within, "every transaction to end", func() bool { return ts.Txns("").Total == 0 })
}

// gRPC unary, server-streaming, client-streaming and bidirectional calls
// through both legs reach b's gRPC application with their metadata (text
// and binary) and messages, and come back with headers, trailers, messages
// and status codes intact; the bidirectional call is a ping-pong, each
// answer received before the next message is sent.
func TestGRPCThroughBothLegs(t *testing.T) {
	ts := servertest.Start(t, "")
	app := &grpcApp{}
	startProxy(t, ts, "b", "v1", serveGRPC(t, app), nil)
	a := startProxy(t, ts, "a", "v1", serveApp(t, &echoApp{}), []dependency{{Service: "b", Listen: "127.0.0.1:0"}})
	conn, err := grpc.NewClient(a.listenerAddr("dep-b"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := testpb.NewTestServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "x-app-key", "value", "x-app-raw-bin", string([]byte{0, 1, 2, 255}))
	checkMD := func(what string, hdr, trl metadata.MD) {
		t.Helper()
		if !slices.Equal(hdr["x-app-key"], []string{"value"}) || !slices.Equal(hdr["x-app-raw-bin"], []string{string([]byte{0, 1, 2, 255})}) {
			t.Errorf("%s: header %v", what, hdr)
		}
		if !slices.Equal(trl["x-app-trailer"], []string{"done"}) {
			t.Errorf("%s: trailer %v", what, trl)
		}
		md := app.lastMD()
		if !txnIDRe.MatchString(first(md, sidecar.HeaderTxn)) || !subRe.MatchString(first(md, sidecar.HeaderSub)) {
			t.Errorf("%s: the application got mesh metadata %q %q", what, md[sidecar.HeaderTxn], md[sidecar.HeaderSub])
		}
	}

	t.Run("unary", func(t *testing.T) {
		var hdr, trl metadata.MD
		resp, err := c.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}}, grpc.Header(&hdr), grpc.Trailer(&trl))
		if err != nil || string(resp.GetPayload().GetBody()) != "HELLO" {
			t.Fatalf("UnaryCall = %v, %v", resp, err)
		}
		checkMD("unary", hdr, trl)
		_, err = c.EmptyCall(ctx, &testpb.Empty{})
		if s, _ := status.FromError(err); s.Code() != codes.Unimplemented || s.Message() != "method EmptyCall not implemented" {
			t.Fatalf("EmptyCall (not implemented) = %v, want the application's Unimplemented status", err)
		}
	})
	t.Run("server streaming", func(t *testing.T) {
		sizes := []int32{1, 10, 100, 100000}
		var params []*testpb.ResponseParameters
		for _, n := range sizes {
			params = append(params, &testpb.ResponseParameters{Size: n})
		}
		s, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range sizes {
			m, err := s.Recv()
			if err != nil || len(m.GetPayload().GetBody()) != int(n) {
				t.Fatalf("message of %d bytes: %v, %v", n, len(m.GetPayload().GetBody()), err)
			}
		}
		if _, err := s.Recv(); err != io.EOF {
			t.Fatalf("end of stream: %v", err)
		}
		hdr, _ := s.Header()
		checkMD("server streaming", hdr, s.Trailer())
	})
	t.Run("client streaming", func(t *testing.T) {
		s, err := c.StreamingInputCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{10, 20, 30000} {
			if err := s.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, n)}}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := s.CloseAndRecv()
		if err != nil || resp.GetAggregatedPayloadSize() != 30030 {
			t.Fatalf("CloseAndRecv = %v, %v; want 30030 bytes", resp, err)
		}
		hdr, _ := s.Header()
		checkMD("client streaming", hdr, s.Trailer())
	})
	t.Run("bidi streaming", func(t *testing.T) {
		s, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range []string{"ping", "pong", "again"} {
			if err := s.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(msg)}}); err != nil {
				t.Fatal(err)
			}
			m, err := s.Recv()
			if err != nil || string(m.GetPayload().GetBody()) != string(bytes.ToUpper([]byte(msg))) {
				t.Fatalf("answer to %q: %v, %v", msg, m, err)
			}
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("end of stream: %v", err)
		}
		hdr, _ := s.Header()
		checkMD("bidi streaming", hdr, s.Trailer())
	})
	servertest.Eventually(t, within, "every transaction to end", func() bool { return ts.Txns("").Total == 0 })
}

func first(md metadata.MD, k string) string {
	if v := md.Get(k); len(v) > 0 {
		return v[0]
	}
	return ""
}
