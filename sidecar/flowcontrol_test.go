package sidecar_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/sidecar"
)

// frameCounter counts the HTTP/2 frames in one direction of a connection
// from the bytes that pass, after skip bytes (the client preface).
type frameCounter struct {
	mu          sync.Mutex
	buf         []byte
	skip        int
	data, pings int // DATA frames; PING frames that are not acks
}

func (f *frameCounter) feed(p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.buf = append(f.buf, p...)
	n := min(f.skip, len(f.buf))
	f.buf, f.skip = f.buf[n:], f.skip-n
	for len(f.buf) >= 9 {
		size := int(f.buf[0])<<16 | int(f.buf[1])<<8 | int(f.buf[2])
		if len(f.buf) < 9+size {
			return
		}
		switch typ, flags := http2.FrameType(f.buf[3]), http2.Flags(f.buf[4]); {
		case typ == http2.FrameData:
			f.data++
		case typ == http2.FramePing && !flags.Has(http2.FlagPingAck):
			f.pings++
		}
		f.buf = f.buf[9+size:]
	}
}

func (f *frameCounter) counts() (data, pings int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.data, f.pings
}

// countingConn feeds what it reads to in and what it writes to out.
type countingConn struct {
	net.Conn
	in, out *frameCounter
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.feed(p[:n])
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.feed(p[:n])
	return n, err
}

// An idle session costs a heartbeat and its ack, nothing more on the wire:
// neither the SDK nor the coordinator sends HTTP/2 PINGs per message (gRPC's
// dynamic flow-control window sends one after the first DATA frame of each
// estimate, i.e. after every heartbeat and every ack of an idle session:
// each side then wrote and read two frames more per heartbeat).
func TestIdleSessionSendsNoPings(t *testing.T) {
	ts := servertest.Start(t, "")
	fromServer := &frameCounter{}
	fromClient := &frameCounter{skip: len(http2.ClientPreface)}
	var dials sync.Mutex
	dialed := 0
	c, err := sidecar.New(sidecar.Config{
		Coordinators:      []string{"passthrough:///coordinator"},
		InstanceID:        "a-1",
		Service:           "a",
		Version:           "v1",
		HeartbeatInterval: 100 * time.Millisecond,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			dials.Lock()
			defer dials.Unlock()
			if dialed++; dialed > 1 {
				t.Errorf("dial %d: the session reconnected", dialed)
			}
			conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", ts.GRPCAddr())
			if err != nil {
				return nil, err
			}
			return countingConn{Conn: conn, in: fromServer, out: fromClient}, nil
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	// Registered and the routing table, then one ack per heartbeat: wait
	// for ten heartbeats answered.
	const acks = 10
	for {
		sent, _ := fromClient.counts()
		got, _ := fromServer.counts()
		if sent >= acks+1 && got >= acks+2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after %v: client sent %d DATA frames, server %d; want %d heartbeats answered", within, sent, got, acks)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if data, pings := fromClient.counts(); pings != 0 {
		t.Errorf("the SDK sent %d PINGs with %d DATA frames, want none", pings, data)
	}
	if data, pings := fromServer.counts(); pings != 0 {
		t.Errorf("the coordinator sent %d PINGs with %d DATA frames, want none", pings, data)
	}
}
