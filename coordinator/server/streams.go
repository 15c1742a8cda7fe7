package server

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/coordinator"
)

// Defaults of Config.MaxStreams and Config.MaxStreamsPerPeer: far above a
// mesh's sidecars per coordinator (bench/mesh runs 2,000 from one loopback
// address), far below what would exhaust memory or file descriptors.
const (
	DefaultMaxStreams        = 20_000
	DefaultMaxStreamsPerPeer = 5_000
)

// streamLimits bounds the sidecar streams open at once, in all and per
// peer address, so that a client that opens streams and never uses them
// cannot take the replica's memory or descriptors.
type streamLimits struct {
	max, perPeer int
	refused      *prometheus.CounterVec
	open         prometheus.GaugeFunc

	mu     sync.Mutex
	total  int
	byPeer map[string]int
}

func newStreamLimits(max, perPeer int) *streamLimits {
	if max <= 0 {
		max = DefaultMaxStreams
	}
	if perPeer <= 0 {
		perPeer = DefaultMaxStreamsPerPeer
	}
	l := &streamLimits{max: max, perPeer: perPeer, byPeer: make(map[string]int),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "coordinator", Name: "sidecar_streams_refused_total",
			Help: "Sidecar streams refused at a limit: max_streams (in all) or max_streams_per_peer."}, []string{"limit"}),
	}
	l.open = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "coordinator", Name: "sidecar_streams_open",
		Help: "Sidecar streams open on this replica (registered or not)."}, func() float64 {
		l.mu.Lock()
		defer l.mu.Unlock()
		return float64(l.total)
	})
	return l
}

func (l *streamLimits) collectors() []prometheus.Collector {
	return []prometheus.Collector{l.refused, l.open}
}

// peerHost is the address a stream comes from, without its port
// (coordinator.PeerHost), "unknown" without one.
func peerHost(ctx context.Context) string {
	if host, ok := coordinator.PeerHost(ctx); ok {
		return host
	}
	return "unknown"
}

// acquire counts a new stream from ctx's peer, or refuses it with
// ResourceExhausted naming the limit; release must be called once the
// stream ends.
func (l *streamLimits) acquire(ctx context.Context) (release func(), err error) {
	host := peerHost(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max {
		l.refused.WithLabelValues("max_streams").Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "too many sidecar streams: %d open, the limit (--max-streams) is %d", l.total, l.max)
	}
	if n := l.byPeer[host]; n >= l.perPeer {
		l.refused.WithLabelValues("max_streams_per_peer").Inc()
		return nil, status.Errorf(codes.ResourceExhausted, "too many sidecar streams from %s: %d open, the limit (--max-streams-per-peer) is %d", host, n, l.perPeer)
	}
	l.total++
	l.byPeer[host]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.byPeer[host]--; l.byPeer[host] <= 0 {
				delete(l.byPeer, host)
			}
		})
	}, nil
}
