package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/tlsfiles"
)

// Errors of the package; returned errors wrap them.
var (
	ErrInvalidConfig  = errors.New("sidecar: invalid config")
	ErrStarted        = errors.New("sidecar: client already started")
	ErrClosed         = errors.New("sidecar: client closed")
	ErrRegister       = errors.New("sidecar: registration refused")
	ErrUnflushed      = errors.New("sidecar: events not delivered before close")
	ErrNoTxn          = errors.New("sidecar: no transaction in context")
	ErrNotRoot        = errors.New("sidecar: transaction was not begun by this client")
	ErrUnknownService = errors.New("sidecar: not a service of the mesh")
	ErrNoEndpoint     = errors.New("sidecar: no endpoint of the chosen version")
	ErrRefused        = errors.New("sidecar: the coordinator refused the call")
)

// maxBatch is the most events the coordinator takes in one EventBatch
// (coordinator.MaxEventsPerBatch, not imported: it would pull the server
// into every service).
const maxBatch = 65536

// Config configures a Client.
// DefaultHeartbeatInterval is Config.HeartbeatInterval's default: the
// coordinator's own default for a client that sets none.
const DefaultHeartbeatInterval = 5 * time.Second

// maxReconnectBackoff caps the wait between two attempts to reach a
// coordinator, whatever the heartbeat interval: a new leader is found
// within about a second of its election.
const maxReconnectBackoff = time.Second

type Config struct {
	// Coordinators are gRPC targets of coordinator replicas, tried in turn
	// (a replica that does not lead redirects to the one that does).
	Coordinators []string
	// InstanceID names this instance; a reconnect with the same id resumes
	// its session while the session's lease is alive.
	InstanceID string
	// Service and Version this instance runs.
	Service string
	Version string
	// Address is where other services reach this instance (host:port).
	Address string
	// Dependencies are the services this service may call.
	Dependencies []string
	// EntryPoint marks a service that takes requests from outside the
	// mesh (an edge: API gateway, web front end). Its Middleware and
	// server interceptors strip the mesh headers from every request by
	// default (StripMeshHeaders), so that every request it serves is a new
	// root transaction, whatever headers a client outside sent.
	EntryPoint bool
	// HeartbeatInterval (default 5s, DefaultHeartbeatInterval) and
	// AllowedMisses (default 2) set the session's lease TTL: interval ×
	// (misses + 1), or the coordinator's minimum session TTL (6s by
	// default) if longer. So by default a sidecar that dies holds its
	// transactions for up to 15s. Each heartbeat is a message each way and
	// a lease renewal in etcd: at 1s, 2,000 idle sidecars cost a
	// coordinator 18% of a core (docs/BENCHMARKS.md, mesh scale); set a
	// shorter interval where a dead instance must be noticed sooner.
	HeartbeatInterval time.Duration
	AllowedMisses     uint32
	// BatchSize is the most events per EventBatch (default 256); a full
	// batch is sent at once.
	BatchSize int
	// FlushInterval is the longest an event waits in the queue (default
	// 500µs).
	FlushInterval time.Duration
	// TLS, when any file is named, reaches the coordinators over TLS: CA is
	// the bundle that verifies their certificates (empty: the system
	// roots), Cert and Key this workload's client certificate, whose SPIFFE
	// ID (or CN) is the identity the coordinator lets register as Service
	// (the files a SPIRE agent or cert-manager writes). They are re-read as
	// they rotate; a reconnect presents the new certificate. TLSFromEnv
	// reads them from COORDINATOR_TLS_CA, _CERT and _KEY. Empty: plaintext,
	// for a coordinator on loopback.
	TLS tlsfiles.Files
	// TLSServerName is the name checked in the coordinators' certificates
	// (default: the host of each address dialled).
	TLSServerName string
	// DialOptions are added to those used to reach the coordinators
	// (transport credentials from TLS, else insecure, and fixed 1 MiB
	// HTTP/2 receive windows come first, see flowcontrol.go).
	DialOptions []grpc.DialOption
	// Logger receives the client's logs; nil discards them (Stats counts
	// what matters).
	Logger *slog.Logger
	// KeepSessionOnClose makes Close leave the session to its lease, for an
	// instance that restarts at once under the same InstanceID and resumes
	// it. By default Close deregisters: the session ends at once, and its
	// going is not counted as a lease expiry (self-preservation).
	KeepSessionOnClose bool
	// NaiveLanes is for tests and benchmarks only: a lane transaction's
	// calls look its lane up by name in the current routing table at every
	// hop, instead of using the member map fixed at its entry (DESIGN.md
	// §4.9). A lane edited or deleted mid-run then moves running
	// transactions, which the consistency checker must see.
	NaiveLanes bool
}

// Environment variables of TLSFromEnv.
const (
	EnvTLSCA         = "COORDINATOR_TLS_CA"
	EnvTLSCert       = "COORDINATOR_TLS_CERT"
	EnvTLSKey        = "COORDINATOR_TLS_KEY"
	EnvTLSServerName = "COORDINATOR_TLS_SERVER_NAME"
)

// TLSFromEnv returns the TLS files and server name named by the
// environment (COORDINATOR_TLS_CA, COORDINATOR_TLS_CERT,
// COORDINATOR_TLS_KEY, COORDINATOR_TLS_SERVER_NAME), for Config.TLS and
// Config.TLSServerName; all empty when none is set.
func TLSFromEnv() (files tlsfiles.Files, serverName string) {
	return tlsfiles.Files{CA: os.Getenv(EnvTLSCA), Cert: os.Getenv(EnvTLSCert), Key: os.Getenv(EnvTLSKey)},
		os.Getenv(EnvTLSServerName)
}

// Stats are counters of a Client.
type Stats struct {
	// Queued counts events not acknowledged yet: queued or in flight.
	Queued int
	// Sent counts events sent, resent ones included; Resent counts those
	// sent again after a reconnect; Acked those the coordinator confirmed.
	Sent, Resent, Acked uint64
	// Rejected counts events the coordinator rejected (each error is
	// logged; a run of events refused together is logged once).
	Rejected uint64
	// Duplicates counts resent events rejected because they had been
	// applied already (harmless; see the package documentation).
	Duplicates uint64
	// Late counts events the coordinator ignored because another
	// sidecar's event about the same transaction reached it first (its End,
	// or the caller's Return of the sub-transaction the event is about).
	// Normal with many streams, not an error; each is logged at debug level.
	Late uint64
	// Registrations counts successful (re)registrations.
	Registrations uint64
	// Connected is true while a registered stream is up.
	Connected bool
	// BadLaneHeaders counts inbound calls whose lane header
	// (HeaderLane) was malformed: they ran in no lane.
	BadLaneHeaders uint64
}

// Client is one sidecar session with the coordinator. It is safe for
// concurrent use.
type Client struct {
	cfg   Config
	lg    *slog.Logger
	creds credentials.TransportCredentials // to the coordinators

	routing atomic.Pointer[table]

	mu            sync.Mutex
	queue         []item      // to send, in order
	inflight      []*pb.Event // sent on the current stream, not acked; by seq
	seq           uint64      // last seq given
	ackedThrough  uint64      // highest seq acked on any stream
	resentThrough uint64      // highest seq resent at the last reconnect
	roots         map[string]*root
	waiters       map[uint64]*waiter   // calls waiting for a CallDecision, by seq
	unknown       map[string]time.Time // names the coordinator said are no service, since when
	urgent        bool                 // send the queue now
	closed        bool
	closeCtx      context.Context // Close's, for the final flush

	connMu sync.Mutex
	conns  map[string]*grpc.ClientConn // endpoint address -> conn, for Conn; nil once closed

	started   atomic.Bool
	kick      chan struct{} // the queue needs the sender's attention
	stop      chan struct{} // closed by Close
	done      chan struct{} // closed when the sender goroutine ends
	ready     chan struct{} // closed at the first routing table, or with startErr
	readyOnce sync.Once
	startErr  error // set before ready closes when the client gives up

	connected atomic.Bool
	lastRecv  atomic.Int64 // unix nanos of the last message from the coordinator
	stats     struct{ sent, resent, acked, rejected, duplicates, late, registrations, badLanes atomic.Uint64 }
}

// item is one outgoing message: an event, or the ack of a routing revision.
type item struct {
	ev  *pb.Event
	ack uint64
}

// root is a root transaction begun here and not ended.
type root struct {
	sub  uint64
	sent bool // its BEGIN went out on some stream
}

// waiter is a call waiting for its CallDecision.
type waiter struct {
	ev        *pb.Event
	ch        chan *pb.CallDecision // closed if the client closes
	abandoned bool                  // its Route gave up: a decided call gets a RETURN
}

// New checks cfg, fills in defaults and returns a client; Start connects it.
func New(cfg Config) (*Client, error) {
	switch {
	case len(cfg.Coordinators) == 0:
		return nil, fmt.Errorf("%w: no Coordinators", ErrInvalidConfig)
	case cfg.InstanceID == "" || cfg.Service == "" || cfg.Version == "":
		return nil, fmt.Errorf("%w: InstanceID, Service and Version are required", ErrInvalidConfig)
	case cfg.HeartbeatInterval < 0 || cfg.BatchSize < 0 || cfg.FlushInterval < 0:
		return nil, fmt.Errorf("%w: negative HeartbeatInterval, BatchSize or FlushInterval", ErrInvalidConfig)
	case cfg.BatchSize > maxBatch:
		return nil, fmt.Errorf("%w: BatchSize %d is more than the coordinator takes (%d)", ErrInvalidConfig, cfg.BatchSize, maxBatch)
	}
	if cfg.HeartbeatInterval == 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.AllowedMisses == 0 {
		cfg.AllowedMisses = 2
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 256
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = 500 * time.Microsecond
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	creds, err := tlsfiles.DialCredentials(cfg.TLS, cfg.TLSServerName, tlsfiles.WithLogger(lg))
	if err != nil {
		return nil, fmt.Errorf("%w: TLS: %w", ErrInvalidConfig, err)
	}
	return &Client{
		cfg:     cfg,
		creds:   creds,
		lg:      lg.With("instance", cfg.InstanceID),
		roots:   make(map[string]*root),
		waiters: make(map[uint64]*waiter),
		unknown: make(map[string]time.Time),
		conns:   make(map[string]*grpc.ClientConn),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		ready:   make(chan struct{}),
	}, nil
}

// Start connects to a coordinator and returns once the client is
// registered and has applied the first routing table. From then on it keeps
// a session, reconnecting as needed, until Close. If the coordinator
// refuses the registration as invalid, or its workload identity may not
// register so (no certificate, another service, an instance another
// identity holds), Start returns that error (wrapping ErrRegister) and the
// client is unusable. Otherwise Start returns when ctx
// ends, and the client keeps trying in the background until Close.
func (c *Client) Start(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return ErrStarted
	}
	go c.run()
	select {
	case <-c.ready:
		return c.startErr
	case <-ctx.Done():
		return fmt.Errorf("sidecar: start: %w", ctx.Err())
	}
}

// Close sends what is queued, waits (within ctx) for the coordinator to
// acknowledge it, deregisters and closes the stream. The coordinator ends
// the session at once: live roots that run only on this instance end with
// it; those still running on other services are kept there for a bounded
// time (the coordinator's implicit timeout). With KeepSessionOnClose the
// session stays instead, with its live roots, until they End or its lease
// expires.
// Calls waiting for a decision fail with ErrClosed. Close returns an error
// wrapping ErrUnflushed if events could not be delivered.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed, c.closeCtx = true, ctx
	for seq, w := range c.waiters {
		close(w.ch)
		delete(c.waiters, seq)
	}
	c.mu.Unlock()
	close(c.stop)
	var err error
	if c.started.Load() {
		select {
		case <-c.done:
		case <-ctx.Done():
			err = fmt.Errorf("sidecar: close: %w", ctx.Err())
		}
	}
	c.connMu.Lock()
	for _, cc := range c.conns {
		_ = cc.Close()
	}
	c.conns = nil
	c.connMu.Unlock()
	if st := c.Stats(); err == nil && st.Queued > 0 {
		err = fmt.Errorf("%w: %d events", ErrUnflushed, st.Queued)
	}
	return err
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	queued := len(c.inflight)
	for _, it := range c.queue {
		if it.ev != nil {
			queued++
		}
	}
	c.mu.Unlock()
	return Stats{
		Queued:        queued,
		Sent:          c.stats.sent.Load(),
		Resent:        c.stats.resent.Load(),
		Acked:         c.stats.acked.Load(),
		Rejected:      c.stats.rejected.Load(),
		Duplicates:    c.stats.duplicates.Load(),
		Late:          c.stats.late.Load(),
		Registrations: c.stats.registrations.Load(),
		Connected:     c.connected.Load(),

		BadLaneHeaders: c.stats.badLanes.Load(),
	}
}

// enqueueLocked gives ev the next seq and queues it; urgent sends the queue
// now. c.mu is held.
func (c *Client) enqueueLocked(ev *pb.Event, urgent bool) error {
	if c.closed {
		return ErrClosed
	}
	c.seq++
	ev.Seq = c.seq
	c.queue = append(c.queue, item{ev: ev})
	c.urgent = c.urgent || urgent
	if urgent || len(c.queue) == 1 || len(c.queue) >= c.cfg.BatchSize {
		c.wake()
	}
	return nil
}

func (c *Client) enqueue(ev *pb.Event) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enqueueLocked(ev, false)
}

// wake tells the sender goroutine to look at the queue.
func (c *Client) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}
