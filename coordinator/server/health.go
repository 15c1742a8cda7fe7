package server

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/storage"
)

// serverMetrics are the replica's own metrics, kept across terms (the
// coordinator's are per term).
type serverMetrics struct {
	isLeader     prometheus.Gauge
	redirects    prometheus.Counter
	terms        prometheus.CounterFunc
	authRefusals *prometheus.CounterVec // by reason
}

func newServerMetrics(s *Server) serverMetrics {
	return serverMetrics{
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "coordinator", Name: "is_leader",
			Help: "1 while this replica leads (owns the graph, the streams and the updates)."}),
		redirects: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "coordinator", Name: "sidecar_redirects_total",
			Help: "Sidecar registrations a follower answered with the leader's address."}),
		terms: prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "coordinator", Name: "leader_terms_total",
			Help: "Leadership terms this replica started."}, func() float64 {
			s.mu.RLock()
			defer s.mu.RUnlock()
			return float64(s.terms)
		}),
		authRefusals: newSidecarAuthRefusals(),
	}
}

func (m serverMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.isLeader, m.redirects, m.terms, m.authRefusals}
}

// etcdCheckEvery is how often monitorEtcd checks etcd; a failure is
// logged as soon as a check sees it.
const etcdCheckEvery = time.Second

// startErrShown is how long /health reports that this replica, elected,
// could not start its coordinator (unless a term of it starts first).
const startErrShown = time.Minute

// monitorEtcd checks etcd every etcdCheckEvery until stop, keeps the
// result for /health and logs each change at once: an unreachable etcd is
// in the log within about two seconds, not when some request times out.
func (s *Server) monitorEtcd(stop <-chan struct{}) {
	t := time.NewTicker(etcdCheckEvery)
	defer t.Stop()
	var down time.Time
	for {
		ctx, cancel := context.WithTimeout(context.Background(), etcdCheckEvery)
		err := storage.Check(ctx, s.cli)
		cancel()
		s.mu.Lock()
		was := s.etcdErr
		s.etcdErr = err
		s.mu.Unlock()
		s.updateServing()
		switch {
		case err != nil && was == nil:
			down = time.Now()
			s.lg.Error("etcd unreachable: this replica cannot serve until it answers", "error", err)
		case err == nil && was != nil:
			s.lg.Info("etcd reachable again", "down_for", time.Since(down).Round(time.Millisecond))
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// HealthReport is /health: the leader's coordinator report, or for a
// follower whether etcd answers and a leader is known.
type HealthReport struct {
	coordinator.HealthReport
	Role    string `json:"role"` // leader or follower
	Replica string `json:"replica"`
	Leader  string `json:"leader,omitempty"` // the leader's gRPC address
}

// Health reports the replica's health.
func (s *Server) Health(ctx context.Context) HealthReport {
	r := HealthReport{Role: "follower", Replica: s.self.Name}
	if l := s.LeaderInfo(); l != nil {
		r.Leader = l.GrpcAddress
	}
	if c := s.Leader(); c != nil {
		r.Role = "leader"
		r.HealthReport = c.Health(ctx)
		return r
	}
	r.Etcd = "ok"
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := storage.Check(cctx, s.cli); err != nil {
		r.Etcd = err.Error()
		r.Problems = append(r.Problems, "etcd: "+err.Error())
	} else if q, err := coordinator.ReadQuarantine(cctx, s.store); err == nil {
		r.Quarantine = q
	}
	if r.Leader == "" {
		r.Problems = append(r.Problems, "no leader elected")
	}
	s.mu.RLock()
	startErr, at := s.startErr, s.startErrAt
	s.mu.RUnlock()
	if startErr != nil && time.Since(at) < startErrShown {
		r.Problems = append(r.Problems, fmt.Sprintf("elected %v ago, but the coordinator could not start: %v",
			time.Since(at).Round(time.Millisecond), startErr))
	}
	r.Healthy = len(r.Problems) == 0
	return r
}

// healthServices are the names grpc.health.v1 answers for besides ""
// (the whole replica): all share the replica's status.
var healthServices = []string{"", "coordinator.v1.AdminService", "coordinator.v1.SidecarService"}

// healthService is the replica's grpc.health.v1 service, NOT_SERVING
// until updateServing finds that it can serve. Its Watch streams end
// when the replica stops serving gRPC (closeWatches), after a last
// NOT_SERVING: an open Watch (gRPC client-side health checking keeps one)
// must not hold the graceful stop until its deadline.
type healthService struct {
	*health.Server
	stop      chan struct{}
	closeOnce sync.Once
}

func newHealthService() *healthService {
	h := &healthService{Server: health.NewServer(), stop: make(chan struct{})}
	for _, svc := range healthServices {
		h.SetServingStatus(svc, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	return h
}

// closeWatches ends every Watch stream, now and to come.
func (h *healthService) closeWatches() { h.closeOnce.Do(func() { close(h.stop) }) }

func (h *healthService) Watch(req *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.Server.Watch(req, ctxStream{stream, ctx}) }()
	select {
	case err := <-done:
		return err
	case <-h.stop:
		cancel()
		<-done // no Send of its own after this
		if slices.Contains(healthServices, req.GetService()) {
			_ = stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING})
		}
		return status.Error(codes.Unavailable, "the replica is shutting down")
	}
}

// ctxStream is a server stream with another context.
type ctxStream struct {
	grpc.ServerStreamingServer[healthpb.HealthCheckResponse]
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }

// canServe reports whether this replica can answer sidecars and operators
// now, and if not why: it leads with its coordinator started, or it
// follows a known leader it can forward to (no failed start of its own
// pending); either way its last etcd check answered. This is /health's
// notion of a working replica without the leader's load warnings
// (capacity, slow etcd writes): those make /health fail so that someone
// looks, but the replica still serves, and taking the only leader out of
// a load balancer would make things worse. Kubernetes gRPC probes and
// grpc_health_probe read it through grpc.health.v1.
func (s *Server) canServe() (bool, string) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.stopping.Load():
		return false, "stopping"
	case s.etcdErr != nil:
		return false, "etcd: " + s.etcdErr.Error()
	case s.cur != nil:
		return true, "leading"
	case s.leader == nil:
		return false, "no leader elected"
	case s.self != nil && s.leader.Name == s.self.Name:
		return false, "elected, coordinator not started yet"
	case s.startErr != nil && time.Since(s.startErrAt) < startErrShown:
		return false, "elected, but the coordinator could not start: " + s.startErr.Error()
	}
	return true, "following " + s.leader.Name
}

// updateServing sets the grpc.health.v1 status from canServe; it is called
// after every etcd check (each second), as a term starts or ends and as
// the observed leader changes. A change is logged.
func (s *Server) updateServing() {
	if s.healthSrv == nil {
		return
	}
	ok, why := s.canServe()
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	if s.serving.Swap(ok) != ok {
		s.lg.Info("grpc health", "status", st.String(), "reason", why)
	}
	for _, svc := range healthServices {
		s.healthSrv.SetServingStatus(svc, st)
	}
}
