package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// openStream opens a sidecar stream that sends nothing.
func openStream(t *testing.T, ts *servertest.Server) (pb.SidecarService_ConnectClient, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := pb.NewSidecarServiceClient(ts.Conn).Connect(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	return st, cancel
}

// recvCode waits for the stream's end and returns its status code.
func recvCode(t *testing.T, st pb.SidecarService_ConnectClient) (codes.Code, string) {
	t.Helper()
	for {
		if _, err := st.Recv(); err != nil {
			s := status.Convert(err)
			return s.Code(), s.Message()
		}
	}
}

// Streams over a limit, in all or from one peer, are refused with
// ResourceExhausted naming the limit, and a stream that ended frees its
// place; the streams already open are not disturbed.
func TestStreamLimits(t *testing.T) {
	for _, tc := range []struct {
		name         string
		max, perPeer int
		says         string
	}{
		{"in all", 2, 10, "--max-streams"},
		{"per peer", 10, 2, "--max-streams-per-peer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := servertest.Start(t, "", func(c *server.Config) {
				c.MaxStreams, c.MaxStreamsPerPeer = tc.max, tc.perPeer
				c.Coordinator.RegisterTimeout = time.Minute
			})
			_, cancel1 := openStream(t, ts)
			defer cancel1()
			second, cancel2 := openStream(t, ts)
			// A stream is counted once the server has it: wait for both.
			servertest.Eventually(t, 10*time.Second, "two streams open", func() bool {
				return ts.Metric("coordinator_sidecar_streams_open") == 2
			})
			third, cancel3 := openStream(t, ts)
			defer cancel3()
			if code, msg := recvCode(t, third); code != codes.ResourceExhausted || !strings.Contains(msg, tc.says) {
				t.Fatalf("third stream: %v %q; want ResourceExhausted naming %s", code, msg, tc.says)
			}
			if n := ts.Metric("coordinator_sidecar_streams_refused_total"); n != 1 {
				t.Fatalf("refusals counted: %v, want 1", n)
			}
			cancel2()
			_, _ = recvCode(t, second)
			servertest.Eventually(t, 10*time.Second, "one stream open", func() bool {
				return ts.Metric("coordinator_sidecar_streams_open") == 1
			})
			again, cancel4 := openStream(t, ts)
			defer cancel4()
			servertest.Eventually(t, 10*time.Second, "a stream in the freed place", func() bool {
				return ts.Metric("coordinator_sidecar_streams_open") == 2
			})
			_ = again
		})
	}
}

// A stream that sends no Register within RegisterTimeout is ended with
// DeadlineExceeded, on the leader and on a follower alike.
func TestStreamWithoutRegisterEnds(t *testing.T) {
	short := func(c *server.Config) { c.Coordinator.RegisterTimeout = 300 * time.Millisecond }
	c := servertest.StartCluster(t, 2, short)
	leader := c.Leader(time.Minute)
	for _, r := range c.Replicas {
		role := "follower"
		if r == leader {
			role = "leader"
		}
		st, cancel := openStream(t, r)
		code, msg := recvCode(t, st)
		cancel()
		if code != codes.DeadlineExceeded || !strings.Contains(msg, "no Register within 300ms") {
			t.Errorf("%s: idle stream ended with %v %q; want DeadlineExceeded", role, code, msg)
		}
	}
}
