package main

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/coordinator/coordinator/sidecar"
)

// metrics are the proxy's Prometheus metrics, on their own registry.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight *prometheus.GaugeVec
	mismatch prometheus.Counter // istio mode
}

func newMetrics(client *sidecar.Client) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordsidecar_requests_total",
			Help: "Requests proxied, by leg (inbound, outbound), target (this service, a dependency, or http-proxy) and response code (or error).",
		}, []string{"leg", "target", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "coordsidecar_request_duration_seconds",
			Help:    "Time from a request's arrival to the end of its response (of its stream), by leg.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"leg"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coordsidecar_inflight_requests",
			Help: "Requests (streams) being proxied, by leg.",
		}, []string{"leg"}),
	}
	m.mismatch = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "coordsidecar_istio_version_mismatch_total",
		Help: "Istio mode: responses whose x-version named another version than the coordinator's for the call (the mesh did not route by the rendered manifests).",
	})
	stat := func(f func(sidecar.Stats) float64) func() float64 {
		return func() float64 { return f(client.Stats()) }
	}
	m.reg.MustRegister(m.requests, m.duration, m.inflight, m.mismatch,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "coordsidecar_coordinator_connected", Help: "1 while a registered stream to the coordinator is up."},
			stat(func(s sidecar.Stats) float64 { return b2f(s.Connected) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "coordsidecar_events_queued", Help: "Events not acknowledged by the coordinator yet."},
			stat(func(s sidecar.Stats) float64 { return float64(s.Queued) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "coordsidecar_events_sent_total", Help: "Events sent to the coordinator, resent ones included."},
			stat(func(s sidecar.Stats) float64 { return float64(s.Sent) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "coordsidecar_events_acked_total", Help: "Events the coordinator acknowledged."},
			stat(func(s sidecar.Stats) float64 { return float64(s.Acked) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "coordsidecar_events_rejected_total", Help: "Events the coordinator rejected."},
			stat(func(s sidecar.Stats) float64 { return float64(s.Rejected) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "coordsidecar_registrations_total", Help: "Successful (re)registrations with the coordinator."},
			stat(func(s sidecar.Stats) float64 { return float64(s.Registrations) })),
	)
	return m
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// record counts a response from upstream. The counter of each status code
// is looked up once per leg and target (WithLabelValues hashes its labels
// and formats the code on every call).
func (m *metrics) record(leg, target string) func(*http.Response) error {
	var byCode sync.Map // status code -> prometheus.Counter
	return func(r *http.Response) error {
		c, ok := byCode.Load(r.StatusCode)
		if !ok {
			c, _ = byCode.LoadOrStore(r.StatusCode, m.requests.WithLabelValues(leg, target, strconv.Itoa(r.StatusCode)))
		}
		c.(prometheus.Counter).Inc()
		return nil
	}
}

// track counts a leg's requests in flight, for metrics and for shutdown.
func (p *proxy) track(leg string, h http.Handler) http.Handler {
	inflight, duration := p.met.inflight.WithLabelValues(leg), p.met.duration.WithLabelValues(leg)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.handlers.Add(1)
		defer p.handlers.Done()
		inflight.Inc()
		defer inflight.Dec()
		start := time.Now()
		defer func() { duration.Observe(time.Since(start).Seconds()) }()
		h.ServeHTTP(w, r)
	})
}

// proxyError answers a request the proxy could not send on, or whose
// upstream failed: 503 when the coordinator gave no endpoint, 504 on a
// timeout, 502 otherwise.
func (p *proxy) proxyError(leg, target string) func(http.ResponseWriter, *http.Request, error) {
	lg := p.lg.With("leg", leg, "target", target)
	return func(w http.ResponseWriter, r *http.Request, err error) {
		code, label := http.StatusBadGateway, ""
		switch {
		case errors.Is(r.Context().Err(), context.Canceled):
			label = "canceled" // the client went away: nobody reads the answer
		case errors.Is(err, sidecar.ErrNoEndpoint), errors.Is(err, sidecar.ErrRefused),
			errors.Is(err, sidecar.ErrClosed), errors.Is(err, errNotInMesh):
			code = http.StatusServiceUnavailable
		case errors.Is(err, context.DeadlineExceeded):
			code = http.StatusGatewayTimeout
		}
		if label == "" {
			label = strconv.Itoa(code)
			lg.Warn("proxy error", "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
		}
		p.met.requests.WithLabelValues(leg, target, label).Inc()
		http.Error(w, "coordsidecar: "+err.Error(), code)
	}
}

// adminHandler serves /healthz and /metrics. /healthz is 200 while the
// proxy is registered and serving, 503 before (starting) and once SIGTERM
// came (draining). A lost stream to the coordinator does not fail it: the
// proxy keeps routing by the last table and the SDK reconnects (the body's
// coordinatorConnected and the coordsidecar_coordinator_connected metric
// say so). With --pprof it serves net/http/pprof's /debug/pprof/ too.
func (p *proxy) adminHandler() http.Handler {
	mux := http.NewServeMux()
	if p.cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.met.reg, promhttp.HandlerOpts{ErrorLog: newLogLogger(p.logAt("admin"))}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		status, code := "ok", http.StatusOK
		switch {
		case p.draining.Load():
			status, code = "draining", http.StatusServiceUnavailable
		case !p.ready.Load():
			status, code = "starting", http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"status": status, "service": p.cfg.Service, "version": p.cfg.Version,
			"instance": p.instanceID, "coordinatorConnected": p.client.Stats().Connected,
		})
	})
	return mux
}

// logAt returns a function that logs a line of net/http's at warn level.
func (p *proxy) logAt(component string) func(string) {
	lg := p.lg.With("component", component)
	return func(s string) { lg.Warn(strings.TrimSpace(s)) }
}

// newLogLogger is a *log.Logger that hands each line to f.
func newLogLogger(f func(string)) *log.Logger {
	return log.New(logWriter(f), "", 0)
}

type logWriter func(string)

func (f logWriter) Write(b []byte) (int, error) {
	f(string(b))
	return len(b), nil
}
