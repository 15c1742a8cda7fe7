package server

import (
	"context"
	"fmt"
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
