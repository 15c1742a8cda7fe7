package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server/webui"
	"github.com/coordinator/coordinator/docs/openapi"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/adminauth"
	"github.com/coordinator/coordinator/security/identity"
	"github.com/coordinator/coordinator/security/tlsfiles"
	"github.com/coordinator/coordinator/storage"
	"github.com/coordinator/coordinator/storage/embedetcd"
)

// Defaults of Config.
const (
	DefaultGRPCAddr = "127.0.0.1:7400"
	DefaultHTTPAddr = "127.0.0.1:7401"
	DefaultDataDir  = "coordinatord.data"
)

// Config configures a replica. Zero addresses mean the defaults; use
// "127.0.0.1:0" to let the kernel pick (tests).
type Config struct {
	GRPCAddr string
	HTTPAddr string
	// DataDir holds the embedded etcd's data (in DataDir/etcd). Unused with
	// EtcdEndpoints.
	DataDir string
	// EtcdEndpoints selects an external etcd cluster instead of the embedded one.
	EtcdEndpoints []string
	// Embedded etcd as a member of a cluster (see embedetcd.Config): the
	// member Name, InitialCluster ("n1=http://host:port,..."), this
	// member's PeerAddr (default: its entry in InitialCluster),
	// EtcdClientAddr (default "127.0.0.1:0") and ClusterState ("new" or
	// "existing"). All empty: a single member on loopback, with no client
	// listener unless EtcdClientAddr is set (this replica calls it in
	// process).
	Name, InitialCluster, PeerAddr, EtcdClientAddr, ClusterState string
	// PeerListenAddr and EtcdClientListenAddr, when set, are what the
	// member's peer and client listeners bind (e.g. 0.0.0.0:2380 in a
	// pod), PeerAddr and EtcdClientAddr then only what it advertises
	// (embedetcd.Config.PeerListenAddr and ClientListenAddr).
	PeerListenAddr, EtcdClientListenAddr string
	// EtcdPeerTLS and EtcdClientTLS secure the embedded member with mutual
	// TLS (embedetcd.Config.PeerTLS and ClientTLS: cert, key and CA each):
	// its peer URLs (InitialCluster's then https://) and its client
	// listener. With EtcdClientTLS, this replica's own etcd client
	// presents EtcdClientTLS's certificate to its member.
	EtcdPeerTLS, EtcdClientTLS tlsfiles.Files
	// EtcdTLS and EtcdUsername/EtcdPassword are how this replica's client
	// reaches an external etcd (EtcdEndpoints): the CA bundle that
	// verifies etcd (empty: the system roots) and the client certificate
	// and key it presents, any of them; and etcd's auth user.
	EtcdTLS                    tlsfiles.Files
	EtcdUsername, EtcdPassword string
	// Coordinator settings; Store (on this replica's etcd client, fenced
	// by the term's election key, with the key prefix of
	// Coordinator.Prefix), Registerer and OnFenced are filled in for each
	// leadership term.
	Coordinator coordinator.Config
	Logger      *slog.Logger
	// ReplicaName names this replica in the election and the cluster view,
	// unique among replicas; default Name, else the advertised gRPC address.
	ReplicaName string
	// LeaderTTL is the election session's lease TTL (DefaultLeaderTTL),
	// whole seconds, at least 2.
	LeaderTTL time.Duration
	// StartTimeout bounds restoring state when elected (default 1m); a
	// term that does not start within it resigns, and /health says so.
	StartTimeout time.Duration
	// MaxStreams and MaxStreamsPerPeer bound the sidecar streams open at
	// once, in all and per peer address (DefaultMaxStreams,
	// DefaultMaxStreamsPerPeer); one more is refused with ResourceExhausted.
	MaxStreams, MaxStreamsPerPeer int
	// MaxStateWatchers bounds the WatchState streams (the web view's) this
	// replica serves at once (DefaultMaxStateWatchers); one more is refused
	// with ResourceExhausted. StateWatchDuration is the longest one lasts
	// (DefaultStateWatchDuration) before it ends and the client reconnects.
	MaxStateWatchers   int
	StateWatchDuration time.Duration
	// MaxRequestBytes bounds a REST request body (DefaultMaxRequestBytes);
	// a larger one gets 413.
	MaxRequestBytes int64
	// AdvertiseGRPC and AdvertiseHTTP are the addresses other replicas
	// send sidecars and operators to; default the bound addresses.
	AdvertiseGRPC, AdvertiseHTTP string
	// GRPCServerOptions are added to the gRPC listener's server's own
	// (interceptors, stats handlers): what network clients (sidecars,
	// coordctl, other replicas) reach. Admin authentication adds its
	// interceptors here; the REST gateway's calls do not pass through them
	// (see GatewayServerOptions).
	GRPCServerOptions []grpc.ServerOption

	// TLS is the certificate and key of the gRPC and HTTP listeners
	// (--tls-cert, --tls-key; empty: plaintext), re-read as they rotate
	// (tlsfiles). TLS.CA is the client CA (--client-ca): when set, a
	// client certificate, if given, must verify against it
	// (tls.VerifyClientCertIfGiven: admin clients may authenticate with
	// tokens, probes with nothing), and the sidecar stream requires one;
	// it is also the bundle that verifies the leader's certificate when a
	// follower forwards to it (see transport.go).
	TLS tlsfiles.Files
	// TLSCheckInterval is how often the TLS files are looked at again
	// (tlsfiles.DefaultCheckInterval when 0; tests shorten it).
	TLSCheckInterval time.Duration
	// Identity reads a sidecar's identity from its client certificate:
	// UseCN and TrustDomain are taken from here; Roots is set to the
	// client CA's certificates. The identity is put in the sidecar
	// stream's context (identity.FromContext).
	Identity identity.Reader
	// HealthAddr, if set, is a plaintext listener serving only /health,
	// /metrics and grpc.health.v1 (HTTP/1.1 and HTTP/2 without TLS on one
	// port): Kubernetes probes present no client certificate.
	HealthAddr string

	// The seam for admin authentication (security/adminauth). The REST
	// gateway calls the admin service through an in-process gRPC server,
	// the gateway server, that only the gateway can reach (transport.go):
	//
	//  - RESTMiddleware wraps the REST API (/v1/) on the HTTP listener,
	//    before the gateway: it authenticates the HTTP caller (token,
	//    client certificate in r.TLS) and may put the principal in the
	//    request's context. /health, /metrics, /openapi.json and the web
	//    view's static files are not wrapped.
	//  - GatewayMuxOptions are added to the gateway's runtime.ServeMux:
	//    runtime.WithMetadata can carry the principal from the request's
	//    context into the gRPC call's metadata.
	//  - GatewayServerOptions are added to the gateway server
	//    (interceptors): they read that metadata, which only the gateway
	//    can have sent.
	RESTMiddleware       func(http.Handler) http.Handler
	GatewayMuxOptions    []runtime.ServeMuxOption
	GatewayServerOptions []grpc.ServerOption
	// WrapKV, if set, replaces the etcd client's KV before anything uses
	// it: tests and benchmarks hold or delay some writes with it (see
	// internal/etcdgate).
	WrapKV func(clientv3.KV) clientv3.KV
	// AdminAuth: admin roles, tokens and identities (security/adminauth;
	// adminauth.go). Zero: open mode, every caller an operator. Logger
	// defaults to Logger.
	AdminAuth adminauth.Config
}

// Server is a running replica.
type Server struct {
	etcd *embedetcd.Server
	// raftPeers: the embedded member has peers (InitialCluster), so Raft
	// leadership can be, and is, kept off it while this replica leads.
	raftPeers bool
	cli       *clientv3.Client
	// renew renews a session lease in process on a single embedded member
	// (nil: through cli).
	renew func(ctx context.Context, id storage.LeaseID) (time.Duration, error)
	store *storage.Etcd // unfenced: a follower's reads
	grpc  *grpc.Server
	http  *http.Server
	gw    *grpc.ClientConn // the REST gateway's, to gwSrv
	gwSrv *grpc.Server     // the gateway server: in process, only gw reaches it
	gLis  net.Listener
	hLis  net.Listener
	tr    *transport
	// The plaintext health listener (Config.HealthAddr), if any.
	healthLis  net.Listener
	healthHTTP *http.Server
	healthGRPC *grpc.Server
	lg         *slog.Logger
	reg        *prometheus.Registry
	// healthSrv is grpc.health.v1; serving is its last status (true:
	// SERVING), set by updateServing.
	healthSrv *healthService
	serving   atomic.Bool
	done      chan error  // gRPC, HTTP and the embedded member: each sends at most once
	stopping  atomic.Bool // Close or Crash began: a stopped member is expected

	keys      storage.Keys
	ccfg      coordinator.Config
	self      *pb.Replica
	leaderTTL time.Duration
	// startTimeout bounds restoring state when elected; stopTimeout
	// bounds a term's coordinator stop.
	startTimeout, stopTimeout time.Duration
	metrics                   serverMetrics
	streamLimits              *streamLimits
	stateWatch                *stateWatch // WatchState's bounds (statewatch.go)
	stopLead                  chan struct{}
	leadDone                  chan struct{}

	mu            sync.RWMutex
	cur           *term       // while leading
	leader        *pb.Replica // as observed; nil when unknown
	leaderChanged chan struct{}
	terms         int
	crashed       atomic.Bool
	ourKey        string          // the election key while leading
	lostKey       chan struct{}   // closed when the observed leader is not ourKey
	closeCtx      context.Context // Close's, for the last term's stop
	termErr       error           // what the last term's graceful stop reported
	// startErr is why this replica, elected, could not start its
	// coordinator (and when), until a term of it starts or the failure
	// ages past startErrShown; /health reports it.
	startErr   error
	startErrAt time.Time
	// etcdErr is the last etcd check's failure (nil when it answered);
	// monitorEtcd keeps it and logs each change at once.
	etcdErr     error
	monitorDone chan struct{} // closed when monitorEtcd has returned

	// connectHook, if set, sees the context of each sidecar stream as the
	// coordinator will (tests: export_test.go).
	connectHook atomic.Pointer[func(context.Context)]

	fwdMu   sync.Mutex
	fwd     *grpc.ClientConn // to the leader, for followers
	fwdAddr string

	auth *adminauth.Authenticator // admin roles (adminauth.go)
}

// Start brings a replica up and returns once it serves.
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	if cfg.GRPCAddr == "" {
		cfg.GRPCAddr = DefaultGRPCAddr
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = DefaultHTTPAddr
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	s := &Server{lg: lg, reg: prometheus.NewRegistry(), done: make(chan error, 4),
		leaderChanged: make(chan struct{}), startTimeout: time.Minute, stopTimeout: 10 * time.Second}
	if cfg.StartTimeout > 0 {
		s.startTimeout = cfg.StartTimeout
	}
	if s.leaderTTL = cfg.LeaderTTL; s.leaderTTL == 0 {
		s.leaderTTL = DefaultLeaderTTL
	}
	if s.leaderTTL < 2*time.Second || s.leaderTTL%time.Second != 0 {
		return nil, fmt.Errorf("server: leader TTL %v: want whole seconds, at least 2s", s.leaderTTL)
	}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = s.Close(cctx)
		}
	}()

	endpoints := cfg.EtcdEndpoints
	if len(endpoints) > 0 && cfg.InitialCluster != "" {
		return nil, errors.New("server: InitialCluster (embedded etcd) and EtcdEndpoints (external etcd) exclude each other")
	}
	clientOpts, err := etcdClientOptions(cfg, lg)
	if err != nil {
		return nil, err
	}
	if len(endpoints) == 0 {
		s.etcd, err = embedetcd.Start(ctx, embedetcd.Config{
			DataDir: filepath.Join(cfg.DataDir, "etcd"), Logger: lg,
			Name: cfg.Name, InitialCluster: cfg.InitialCluster, PeerAddr: cfg.PeerAddr,
			ClientAddr: cfg.EtcdClientAddr, ClusterState: cfg.ClusterState,
			PeerListenAddr: cfg.PeerListenAddr, ClientListenAddr: cfg.EtcdClientListenAddr,
			PeerTLS: cfg.EtcdPeerTLS, ClientTLS: cfg.EtcdClientTLS,
		})
		if err != nil {
			return nil, fmt.Errorf("server: embedded etcd: %w", err)
		}
		// The replica talks to its own member only. A stream it held on
		// another member (watches, the election's keep-alive) would keep
		// that member's graceful stop waiting for etcd's request timeout
		// (7 s), and the member this process runs is the one it must be
		// able to reach anyway: if it stops, the replica stops (watchEtcd).
		endpoints = s.etcd.ClientURLs()
		s.raftPeers = cfg.InitialCluster != ""
		lg.Info("embedded etcd ready", "data_dir", cfg.DataDir, "endpoints", endpoints)
	}
	if s.etcd != nil && cfg.InitialCluster == "" {
		// A single member lives and dies with this process: call it in
		// process. Pinned calls wait for an etcd commit, and a loopback
		// gRPC client doubles its latency.
		s.cli = s.etcd.LocalClient()
		s.renew = func(ctx context.Context, id storage.LeaseID) (time.Duration, error) {
			return s.etcd.RenewLease(ctx, int64(id))
		}
	} else if s.cli, err = storage.NewClient(endpoints, lg, clientOpts...); err != nil {
		return nil, fmt.Errorf("server: etcd client: %w", err)
	}
	if cfg.WrapKV != nil {
		s.cli.KV = cfg.WrapKV(s.cli.KV)
	}

	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = newServerMetrics(s)
	s.reg.MustRegister(s.metrics.collectors()...)
	s.streamLimits = newStreamLimits(cfg.MaxStreams, cfg.MaxStreamsPerPeer)
	s.reg.MustRegister(s.streamLimits.collectors()...)
	s.stateWatch = newStateWatch(cfg.MaxStateWatchers, cfg.StateWatchDuration)
	s.ccfg = cfg.Coordinator
	if s.ccfg.Logger == nil {
		s.ccfg.Logger = lg
	}
	s.keys = storage.Keys{Prefix: s.ccfg.Prefix}
	if s.keys.Prefix == "" {
		s.keys.Prefix = storage.DefaultPrefix
	}
	s.store = storage.NewEtcd(s.cli, storage.EtcdConfig{Prefix: s.keys.Prefix, Logger: lg, Renew: s.renew})

	tlsOpts := []tlsfiles.Option{tlsfiles.WithLogger(lg)}
	if cfg.TLSCheckInterval > 0 {
		tlsOpts = append(tlsOpts, tlsfiles.WithCheckInterval(cfg.TLSCheckInterval))
	}
	if s.tr, err = newTransport(cfg, tlsOpts...); err != nil {
		return nil, err
	}
	if err = s.setupAdminAuth(cfg); err != nil {
		return nil, err
	}
	if s.gLis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("server: grpc listen: %w", err)
	}
	// Per-RPC metrics (grpc_server_started_total, _handled_total by
	// code, _msg_received_total, _msg_sent_total, and
	// grpc_server_handling_seconds), on every service including health
	// and reflection.
	rpcMetrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		grpcprom.WithHistogramBuckets(prometheus.ExponentialBuckets(1e-4, 4, 10))))
	s.reg.MustRegister(rpcMetrics)
	grpcOpts := append([]grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(16 << 20),
		grpc.ChainUnaryInterceptor(rpcMetrics.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(rpcMetrics.StreamServerInterceptor()),
	}, append(append(append(flowControlOptions(), s.tr.serverOption()...), s.adminServerOptions()...), coordinator.ServerOptions()...)...)
	s.grpc = grpc.NewServer(append(grpcOpts, cfg.GRPCServerOptions...)...)
	pb.RegisterSidecarServiceServer(s.grpc, sidecarGate{s: s})
	pb.RegisterAdminServiceServer(s.grpc, adminGate{s: s})
	// grpc.health.v1 (Kubernetes gRPC probes, grpc_health_probe): SERVING
	// only while this replica can serve (canServe).
	s.healthSrv = newHealthService()
	healthpb.RegisterHealthServer(s.grpc, s.healthSrv)
	// Server reflection: grpcurl and friends need no proto files.
	reflection.Register(s.grpc)
	rpcMetrics.InitializeMetrics(s.grpc)
	go func() { s.done <- s.grpc.Serve(s.gLis) }()

	if s.hLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("server: http listen: %w", err)
	}
	// The gateway's calls are counted like the network's
	// (grpc_server_handled_total and kin, the same services); its server
	// trusts the principal the REST middleware authenticated
	// (adminauth.Internal): only the gateway reaches it.
	gwOpts := append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(rpcMetrics.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(rpcMetrics.StreamServerInterceptor()),
	}, s.auth.ServerOptions(adminauth.Internal)...)
	if s.gw, err = s.startGatewayServer(append(gwOpts, cfg.GatewayServerOptions...)); err != nil {
		return nil, fmt.Errorf("server: gateway client: %w", err)
	}
	gw := runtime.NewServeMux(append(append([]runtime.ServeMuxOption{
		runtime.WithMarshalerOption(runtime.MIMEWildcard, restMarshaler())}, s.gatewayOptions()...), cfg.GatewayMuxOptions...)...)
	if err = pb.RegisterAdminServiceHandler(ctx, gw, s.gw); err != nil {
		return nil, fmt.Errorf("server: gateway: %w", err)
	}
	mux := http.NewServeMux()
	maxBody := cfg.MaxRequestBytes
	if maxBody <= 0 {
		maxBody = DefaultMaxRequestBytes
	}
	api := s.adminHTTP(gw)
	if cfg.RESTMiddleware != nil {
		api = cfg.RESTMiddleware(api)
	}
	mux.Handle("/v1/", limitBody(maxBody, api))
	mux.Handle(adminauth.SessionPath, limitBody(maxBody, s.auth.SessionHandler()))
	mux.HandleFunc("/health", s.health)
	mux.Handle("/openapi.json", s.adminHTTP(http.HandlerFunc(serveOpenAPI)))
	// The web view: static, embedded; it reads and acts through /v1/.
	mux.Handle(webui.Prefix, webui.Handler())
	mux.Handle("/ui", webui.Handler())
	metrics := promhttp.HandlerFor(prometheus.Gatherers{s.reg, prometheus.GathererFunc(s.gatherTerm)},
		promhttp.HandlerOpts{Registry: s.reg})
	mux.Handle("/metrics", metrics)
	// A client that trickles its request, or sends huge headers, is cut
	// off; answers (WatchUpdate's included) are not bounded here.
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		// Failed TLS handshakes (a client of another CA, a scanner) and
		// the like: in the replica's log at debug, not on stderr.
		ErrorLog: slog.NewLogLogger(lg.Handler(), slog.LevelDebug)}
	hLis := s.hLis
	if s.tr.server != nil {
		// Same reloader as gRPC: one certificate, rotated for both.
		hLis = tls.NewListener(s.hLis, s.tr.server)
	}
	go func() { s.done <- s.http.Serve(hLis) }()
	if cfg.HealthAddr != "" {
		if err = s.startHealthListener(cfg.HealthAddr, metrics); err != nil {
			return nil, err
		}
	}

	s.self = &pb.Replica{Name: cfg.ReplicaName, GrpcAddress: cfg.AdvertiseGRPC, HttpAddress: cfg.AdvertiseHTTP}
	if s.self.Name == "" {
		s.self.Name = cfg.Name
	}
	if s.self.GrpcAddress == "" {
		s.self.GrpcAddress = s.GRPCAddr()
	}
	if s.self.Name == "" {
		s.self.Name = s.self.GrpcAddress // unique among replicas
	}
	if s.self.HttpAddress == "" {
		s.self.HttpAddress = s.HTTPAddr()
	}
	s.stopLead, s.leadDone = make(chan struct{}), make(chan struct{})
	go s.lead(s.stopLead)
	stop, monitorDone := s.stopLead, make(chan struct{})
	s.monitorDone = monitorDone
	go func() { defer close(monitorDone); s.monitorEtcd(stop) }()
	if s.etcd != nil {
		go s.watchEtcd(s.etcd)
	}
	lg.Info("serving", "replica", s.self.Name, "grpc_addr", s.GRPCAddr(), "http_addr", s.HTTPAddr(),
		"tls", s.tr.server != nil, "client_ca", s.tr.verify, "health_addr", s.HealthAddr())
	return s, nil
}

// ErrMemberStopped is reported on Done when the replica's embedded etcd
// member stopped on its own.
var ErrMemberStopped = errors.New("server: the embedded etcd member stopped")

// watchEtcd reports on Done an embedded member that stopped on its own (a
// fatal etcd error): this replica's etcd client talks to that member only,
// so it can neither lead nor follow any more; its process should exit and
// be restarted rather than linger as a replica that answers nothing.
func (s *Server) watchEtcd(member *embedetcd.Server) {
	<-member.Stopped()
	if !s.stopping.Load() {
		s.lg.Error("the embedded etcd member stopped")
		s.done <- ErrMemberStopped
	}
}

// gatherTerm gathers the metrics of the coordinator of the current term.
func (s *Server) gatherTerm() ([]*dto.MetricFamily, error) {
	s.mu.RLock()
	t := s.cur
	s.mu.RUnlock()
	if t == nil {
		return nil, nil
	}
	return t.reg.Gather()
}

// GRPCAddr is the bound gRPC address (sidecars and admin).
func (s *Server) GRPCAddr() string { return s.gLis.Addr().String() }

// HTTPAddr is the bound HTTP address (REST, /health, /metrics, /openapi.json).
func (s *Server) HTTPAddr() string { return s.hLis.Addr().String() }

// Client is the replica's etcd client.
func (s *Server) Client() *clientv3.Client { return s.cli }

// Store is the replica's store on etcd, unfenced: for reads (a leader's
// writes go through its term's fenced store).
func (s *Server) Store() storage.Store { return s.store }

// Done reports a listener that stopped serving on its own.
func (s *Server) Done() <-chan error { return s.done }

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	rep := s.Health(r.Context())
	w.Header().Set("Content-Type", "application/json")
	if !rep.Healthy {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(rep)
}

// serveOpenAPI serves the REST API's OpenAPI document (docs/openapi).
func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(openapi.JSON)))
	if r.Method == http.MethodGet {
		_, _ = w.Write(openapi.JSON)
	}
}

// Close shuts the replica down without losing anything acknowledged: the
// REST listener stops, every sidecar stream ends after its current batch,
// the write-behind flushes, then gRPC, the etcd client and embedded etcd stop.
func (s *Server) Close(ctx context.Context) error {
	s.stopping.Store(true)
	if s.healthSrv != nil {
		s.healthSrv.Shutdown() // NOT_SERVING from now on: probes see the stop
	}
	var errs []error
	if s.http != nil {
		if err := s.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
	}
	if s.gwSrv != nil {
		s.gwSrv.Stop() // the gateway, its only client, has stopped with s.http
	}
	if s.stopLead != nil {
		// The term ends: streams end after their batch, the write-behind
		// flushes (still fenced: the election key is ours until Resign).
		s.mu.Lock()
		s.closeCtx = ctx
		s.mu.Unlock()
		close(s.stopLead)
		// Every step of the loop's end is bounded by ctx (the term's stop,
		// the resignation) or cancelled by stopLead (campaign, session).
		<-s.leadDone
		var late error
		if ctx.Err() != nil {
			late = fmt.Errorf("leadership did not end in time: %w", ctx.Err())
		}
		s.mu.Lock()
		if s.termErr != nil {
			errs = append(errs, fmt.Errorf("coordinator stop: %w", s.termErr))
		} else if late != nil {
			errs = append(errs, late)
		}
		s.mu.Unlock()
		s.stopLead = nil
	}
	s.closeForward()
	if s.healthSrv != nil {
		s.healthSrv.closeWatches()
	}
	if s.grpc != nil {
		stopped := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-ctx.Done():
			s.grpc.Stop()
		}
	}
	if s.gw != nil {
		s.gw.Close()
	}
	s.closeHealthListener(ctx)
	s.closeBackends()
	s.lg.Info("stopped", "errors", len(errs))
	return errors.Join(errs...)
}

// Crashed reports whether Crash was called.
func (s *Server) Crashed() bool { return s.crashed.Load() }

// Crash stops the replica the way a killed process stops, for failover
// tests: connections drop at once, nothing is flushed, the election key is
// not resigned (it expires with its lease's TTL), the etcd client closes.
// An embedded etcd member stops too. Close afterwards is a no-op.
func (s *Server) Crash() {
	s.stopping.Store(true)
	if s.healthSrv != nil {
		s.healthSrv.Shutdown()
	}
	s.crashed.Store(true)
	if c := s.Leader(); c != nil {
		c.Abandon() // a dead process writes nothing more, not even behind
	}
	if s.grpc != nil {
		s.grpc.Stop()
	}
	if s.http != nil {
		s.http.Close()
	}
	if s.gwSrv != nil {
		s.gwSrv.Stop()
	}
	if s.healthHTTP != nil {
		s.healthHTTP.Close()
		s.healthGRPC.Stop()
	}
	if s.stopLead != nil {
		close(s.stopLead)
		<-s.leadDone
		s.stopLead = nil
	}
	s.closeForward()
	if s.gw != nil {
		s.gw.Close()
		s.gw = nil
	}
	s.closeBackends()
	s.grpc, s.http = nil, nil
	s.lg.Warn("crashed (test)")
}

// closeHealthListener stops the plaintext health listener, last: probes
// see NOT_SERVING and 503 until the replica has stopped.
func (s *Server) closeHealthListener(ctx context.Context) {
	if s.healthHTTP != nil {
		_ = s.healthHTTP.Shutdown(ctx)
	}
	if s.healthGRPC != nil {
		s.healthGRPC.Stop()
	}
}

// closeForward closes the follower's connection to the leader.
func (s *Server) closeForward() {
	s.fwdMu.Lock()
	defer s.fwdMu.Unlock()
	if s.fwd != nil {
		s.fwd.Close()
		s.fwd = nil
	}
}

func (s *Server) closeBackends() {
	if s.monitorDone != nil {
		<-s.monitorDone // it ends with stopLead, before its client closes
	}
	if s.cli != nil {
		s.cli.Close()
		s.cli = nil
	}
	if s.etcd != nil {
		s.etcd.Close()
		s.etcd = nil
	}
}
