package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/storage"
)

// serverMetrics are the replica's own metrics, kept across terms (the
// coordinator's are per term).
type serverMetrics struct {
	isLeader  prometheus.Gauge
	redirects prometheus.Counter
	terms     prometheus.CounterFunc
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
	}
}

func (m serverMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.isLeader, m.redirects, m.terms}
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
	}
	if r.Leader == "" {
		r.Problems = append(r.Problems, "no leader elected")
	}
	r.Healthy = len(r.Problems) == 0
	return r
}
