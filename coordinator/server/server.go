package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/coordinator/coordinator/coordinator"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
	"github.com/coordinator/coordinator/storage/embedetcd"
)

// Defaults of Config.
const (
	DefaultGRPCAddr = "127.0.0.1:7400"
	DefaultHTTPAddr = "127.0.0.1:7401"
	DefaultDataDir  = "coordinatord.data"

	// etcdAutoSync is how often the client of an embedded cluster member
	// re-reads the member list.
	etcdAutoSync = 30 * time.Second
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
	// "existing"). All empty: a single member on loopback.
	Name, InitialCluster, PeerAddr, EtcdClientAddr, ClusterState string
	// Coordinator settings; Client and Registerer are filled in by Start.
	Coordinator coordinator.Config
	Logger      *slog.Logger
}

// Server is a running replica.
type Server struct {
	Coord *coordinator.Coordinator
	etcd  *embedetcd.Server
	cli   *clientv3.Client
	grpc  *grpc.Server
	http  *http.Server
	gw    *grpc.ClientConn
	gLis  net.Listener
	hLis  net.Listener
	lg    *slog.Logger
	reg   *prometheus.Registry
	done  chan error
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
	s := &Server{lg: lg, reg: prometheus.NewRegistry(), done: make(chan error, 2)}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = s.Close(cctx)
		}
	}()

	endpoints := cfg.EtcdEndpoints
	var clientOpts []storage.ClientOption
	if len(endpoints) > 0 && cfg.InitialCluster != "" {
		return nil, errors.New("server: InitialCluster (embedded etcd) and EtcdEndpoints (external etcd) exclude each other")
	}
	if len(endpoints) == 0 {
		s.etcd, err = embedetcd.Start(ctx, embedetcd.Config{
			DataDir: filepath.Join(cfg.DataDir, "etcd"), Logger: lg,
			Name: cfg.Name, InitialCluster: cfg.InitialCluster, PeerAddr: cfg.PeerAddr,
			ClientAddr: cfg.EtcdClientAddr, ClusterState: cfg.ClusterState,
		})
		if err != nil {
			return nil, fmt.Errorf("server: embedded etcd: %w", err)
		}
		endpoints = s.etcd.Endpoints()
		if cfg.InitialCluster != "" {
			// Follow the other members (and their new ports after restarts)
			// so the client survives the loss of the local member.
			clientOpts = append(clientOpts, storage.WithAutoSync(etcdAutoSync))
		}
		lg.Info("embedded etcd ready", "data_dir", cfg.DataDir, "endpoints", endpoints)
	}
	s.cli, err = storage.NewClient(endpoints, lg, clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("server: etcd client: %w", err)
	}

	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ccfg := cfg.Coordinator
	ccfg.Client, ccfg.Registerer = s.cli, s.reg
	if ccfg.Logger == nil {
		ccfg.Logger = lg
	}
	if s.Coord, err = coordinator.New(ccfg); err != nil {
		return nil, err
	}
	if err = s.Coord.Start(ctx); err != nil {
		return nil, err
	}

	if s.gLis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return nil, fmt.Errorf("server: grpc listen: %w", err)
	}
	s.grpc = grpc.NewServer(
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(16<<20),
	)
	pb.RegisterSidecarServiceServer(s.grpc, s.Coord.SidecarServer())
	pb.RegisterAdminServiceServer(s.grpc, s.Coord.AdminServer())
	go func() { s.done <- s.grpc.Serve(s.gLis) }()

	if s.hLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("server: http listen: %w", err)
	}
	if s.gw, err = grpc.NewClient(s.gLis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		return nil, fmt.Errorf("server: gateway client: %w", err)
	}
	gw := runtime.NewServeMux()
	if err = pb.RegisterAdminServiceHandler(ctx, gw, s.gw); err != nil {
		return nil, fmt.Errorf("server: gateway: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", gw)
	mux.HandleFunc("/health", s.health)
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { s.done <- s.http.Serve(s.hLis) }()
	lg.Info("serving", "grpc_addr", s.GRPCAddr(), "http_addr", s.HTTPAddr())
	return s, nil
}

// GRPCAddr is the bound gRPC address (sidecars and admin).
func (s *Server) GRPCAddr() string { return s.gLis.Addr().String() }

// HTTPAddr is the bound HTTP address (REST, /health, /metrics).
func (s *Server) HTTPAddr() string { return s.hLis.Addr().String() }

// Client is the replica's etcd client.
func (s *Server) Client() *clientv3.Client { return s.cli }

// Done reports a listener that stopped serving on its own.
func (s *Server) Done() <-chan error { return s.done }

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	rep := s.Coord.Health(r.Context())
	w.Header().Set("Content-Type", "application/json")
	if !rep.Healthy {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(rep)
}

// Close shuts the replica down without losing anything acknowledged: the
// REST listener stops, every sidecar stream ends after its current batch,
// the write-behind flushes, then gRPC, the etcd client and embedded etcd stop.
func (s *Server) Close(ctx context.Context) error {
	var errs []error
	if s.http != nil {
		if err := s.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
	}
	if s.Coord != nil {
		if err := s.Coord.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("coordinator stop: %w", err))
		}
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
	s.closeBackends()
	s.lg.Info("stopped", "errors", len(errs))
	return errors.Join(errs...)
}

func (s *Server) closeBackends() {
	if s.cli != nil {
		s.cli.Close()
		s.cli = nil
	}
	if s.etcd != nil {
		s.etcd.Close()
		s.etcd = nil
	}
}
