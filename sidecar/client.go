package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Errors of the client.
var (
	ErrClosed       = errors.New("sidecar: client closed")
	ErrNoEndpoint   = errors.New("sidecar: no endpoint of the chosen version")
	ErrDisconnected = errors.New("sidecar: stream to the coordinator lost while a call waited")
	ErrRefused      = errors.New("sidecar: the coordinator refused the call")
)

// Config configures a Client.
type Config struct {
	// Coordinators are gRPC addresses of coordinator replicas, tried in turn.
	Coordinators []string
	InstanceID   string
	Service      string
	Version      string
	// Address is where other services reach this instance (host:port).
	Address      string
	Dependencies []string
	// HeartbeatInterval (default 1s) and AllowedMisses (default 2) set the
	// session's lease TTL: interval x (misses + 1).
	HeartbeatInterval time.Duration
	AllowedMisses     uint32
	// FlushInterval bounds how long an event waits in the queue (default
	// 500µs); BatchSize flushes earlier (default 256).
	FlushInterval time.Duration
	BatchSize     int
	Logger        *slog.Logger
}

// Client is one sidecar session. It is safe for concurrent use.
type Client struct {
	cfg Config
	lg  *slog.Logger

	routeMu sync.RWMutex // held to read: routing + enqueue; to write: apply table + queue its ack
	routing atomic.Pointer[table]

	mu       sync.Mutex
	queue    []item
	seq      uint64
	waiters  map[uint64]chan *pb.CallDecision
	roots    map[string]uint64 // live roots begun here: txn -> root sub
	closed   bool
	kick     chan struct{}
	ready    chan struct{} // closed once registered and a table is applied
	readyErr error

	rejected atomic.Int64
	stop     chan struct{}
	done     chan struct{}
	next     atomic.Uint64 // round-robin over endpoints
}

// item is one outgoing message: an event, or the ack of a routing revision.
type item struct {
	ev  *pb.Event
	ack uint64
}

// New checks cfg and returns a client; Start connects it.
func New(cfg Config) (*Client, error) {
	if len(cfg.Coordinators) == 0 || cfg.InstanceID == "" || cfg.Service == "" || cfg.Version == "" {
		return nil, errors.New("sidecar: Coordinators, InstanceID, Service and Version are required")
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.AllowedMisses == 0 {
		cfg.AllowedMisses = 2
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 500 * time.Microsecond
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 256
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &Client{
		cfg: cfg, lg: lg.With("instance", cfg.InstanceID),
		waiters: make(map[uint64]chan *pb.CallDecision),
		roots:   make(map[string]uint64),
		kick:    make(chan struct{}, 1),
		ready:   make(chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}, nil
}

// Start connects and returns once the client is registered and has the
// routing table; it keeps the session (reconnecting) until Close.
func (c *Client) Start(ctx context.Context) error {
	go c.run()
	select {
	case <-c.ready:
		return c.readyErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close sends what is queued and closes the stream. Roots stay live at the
// coordinator until they end or the session's lease expires.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	close(c.stop)
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Rejected counts events the coordinator rejected.
func (c *Client) Rejected() int64 { return c.rejected.Load() }

// enqueue adds an event; wait makes it go out now. It returns the event's seq.
func (c *Client) enqueue(ev *pb.Event, now bool) uint64 {
	c.mu.Lock()
	c.seq++
	ev.Seq = c.seq
	c.queue = append(c.queue, item{ev: ev})
	full := len(c.queue) >= c.cfg.BatchSize
	c.mu.Unlock()
	if now || full {
		c.wake()
	}
	return ev.Seq
}

func (c *Client) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// run keeps a stream to a coordinator until Close, reconnecting with
// exponential backoff and jitter.
func (c *Client) run() {
	defer close(c.done)
	backoff := 50 * time.Millisecond
	for i := 0; ; i++ {
		addr := c.cfg.Coordinators[i%len(c.cfg.Coordinators)]
		err := c.session(addr)
		c.failWaiters()
		select {
		case <-c.stop:
			return
		default:
		}
		var redirect redirectError
		if errors.As(err, &redirect) {
			// Try the leader first from now on.
			c.cfg.Coordinators = append([]string{redirect.addr}, slices.DeleteFunc(c.cfg.Coordinators, func(a string) bool { return a == redirect.addr })...)
			i = -1
			continue
		}
		c.lg.Warn("coordinator stream ended, reconnecting", "coordinator", addr, "error", err, "backoff", backoff)
		select {
		case <-time.After(backoff + time.Duration(rand.Int64N(int64(backoff)/2+1))):
		case <-c.stop:
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

type redirectError struct{ addr string }

func (e redirectError) Error() string { return "redirected to the leader at " + e.addr }

// session runs one stream: register (with the live roots), then send queued
// events in batches and heartbeats, and apply what the coordinator sends.
func (c *Client) session(addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := pb.NewSidecarServiceClient(conn).Connect(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	reg := &pb.Register{
		InstanceId: c.cfg.InstanceID, Service: c.cfg.Service, Version: c.cfg.Version, Address: c.cfg.Address,
		Dependencies: c.cfg.Dependencies, HeartbeatInterval: durationpb.New(c.cfg.HeartbeatInterval),
		AllowedMisses: c.cfg.AllowedMisses,
	}
	for txn, sub := range c.roots {
		reg.LiveRoots = append(reg.LiveRoots, &pb.LiveRoot{TxnId: txn, SubId: sub})
	}
	c.mu.Unlock()
	if err := stream.Send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Register{Register: reg}}); err != nil {
		return err
	}
	m, err := stream.Recv()
	if err != nil {
		c.notReady(err)
		return err
	}
	if r := m.GetRedirect(); r != nil {
		return redirectError{r.LeaderAddress}
	}
	if m.GetRegistered() == nil {
		return fmt.Errorf("sidecar: expected Registered, got %v", m)
	}
	c.lg.Info("registered", "coordinator", addr, "resumed", m.GetRegistered().GetResumed())

	recvErr := make(chan error, 1)
	go func() { recvErr <- c.receive(stream) }()
	hb := time.NewTicker(c.cfg.HeartbeatInterval)
	defer hb.Stop()
	flush := time.NewTicker(c.cfg.FlushInterval)
	defer flush.Stop()
	for {
		select {
		case <-c.stop:
			err := c.flush(stream)
			_ = stream.CloseSend()
			return err
		case err := <-recvErr:
			return err
		case <-hb.C:
			if err := stream.Send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Heartbeat{Heartbeat: &pb.Heartbeat{}}}); err != nil {
				return err
			}
		case <-c.kick:
		case <-flush.C:
		}
		if err := c.flush(stream); err != nil {
			return err
		}
	}
}

// flush sends the queue in order: runs of events as batches, routing acks
// in between, so an ack follows every event queued before its table.
func (c *Client) flush(stream pb.SidecarService_ConnectClient) error {
	c.mu.Lock()
	q := c.queue
	c.queue = nil
	c.mu.Unlock()
	for len(q) > 0 {
		if q[0].ev == nil {
			msg := &pb.SidecarMessage{Kind: &pb.SidecarMessage_RoutingAck{RoutingAck: &pb.RoutingAck{Revision: q[0].ack}}}
			if err := stream.Send(msg); err != nil {
				return err
			}
			q = q[1:]
			continue
		}
		n := 0
		for n < len(q) && n < c.cfg.BatchSize && q[n].ev != nil {
			n++
		}
		evs := make([]*pb.Event, n)
		for i := range n {
			evs[i] = q[i].ev
		}
		q = q[n:]
		// Sent events are not resent after a reconnect: the re-register
		// resyncs the roots, and a lost event can only leave the coordinator
		// more pessimistic (a sub still running) until its root ends.
		if err := stream.Send(&pb.SidecarMessage{Kind: &pb.SidecarMessage_Events{Events: &pb.EventBatch{Events: evs}}}); err != nil {
			return err
		}
	}
	return nil
}

// receive applies what the coordinator sends until the stream ends.
func (c *Client) receive(stream pb.SidecarService_ConnectClient) error {
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		switch k := m.Kind.(type) {
		case *pb.CoordinatorMessage_Ack:
			for _, e := range k.Ack.Errors {
				c.rejected.Add(1)
				c.lg.Warn("event rejected", "seq", e.Seq, "txn", e.TxnId, "code", e.Code, "message", e.Message)
			}
		case *pb.CoordinatorMessage_Routing:
			c.applyRouting(k.Routing)
		case *pb.CoordinatorMessage_CallDecision:
			c.mu.Lock()
			w := c.waiters[k.CallDecision.Seq]
			delete(c.waiters, k.CallDecision.Seq)
			c.mu.Unlock()
			if w != nil {
				w <- k.CallDecision
			}
		case *pb.CoordinatorMessage_Redirect:
			return redirectError{k.Redirect.LeaderAddress}
		}
	}
}

// applyRouting installs a newer table and queues its ack behind every event
// queued so far.
func (c *Client) applyRouting(r *pb.Routing) {
	c.routeMu.Lock()
	if cur := c.routing.Load(); cur == nil || r.Revision > cur.rev {
		c.routing.Store(newTable(r))
		c.mu.Lock()
		c.queue = append(c.queue, item{ack: r.Revision})
		c.mu.Unlock()
		c.wake()
	}
	c.routeMu.Unlock()
	c.markReady(nil)
}

func (c *Client) markReady(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.ready:
	default:
		c.readyErr = err
		close(c.ready)
	}
}

func (c *Client) notReady(err error) {
	c.lg.Debug("registration failed", "error", err)
}

// failWaiters answers every waiting call with ErrDisconnected (closed
// channel): its decision cannot arrive on a new stream.
func (c *Client) failWaiters() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for seq, w := range c.waiters {
		close(w)
		delete(c.waiters, seq)
	}
}
