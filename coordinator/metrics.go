package coordinator

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// metrics are the coordinator's Prometheus metrics. Per-event counters are
// resolved once and added per batch, so the event path pays no label lookup.
type metrics struct {
	events          []prometheus.Counter // by pb.EventType
	eventErrors     *prometheus.CounterVec
	ownership       *prometheus.CounterVec // refusals by event type
	lateEvents      []prometheus.Counter   // by pb.LateReason
	learnedEdges    prometheus.Counter
	registrations   prometheus.Counter
	heartbeats      prometheus.Counter
	sessionsDropped *prometheus.CounterVec
	freenessSeconds prometheus.Histogram
	implicitExpired prometheus.Counter
	forgotten       *prometheus.CounterVec
	// beginWait: how long CALLs were held for their transaction's BEGIN,
	// by outcome: "begun" (it came) or "timeout" (BeginWaitTimeout passed).
	beginWait     *prometheus.HistogramVec
	quotaRefusals map[string]prometheus.Counter // by quota label
	quarantined   *prometheus.CounterVec        // by record kind
	// batchLockWait and batchLockHeld: per event batch, how long its
	// stream waited for the event lock and how long it then held it
	// (the batch's events, the phases stored meanwhile, the progress
	// check). Two clock reads and two observations per batch.
	batchLockWait prometheus.Histogram
	batchLockHeld prometheus.Histogram
}

func newMetrics(c *Coordinator, reg prometheus.Registerer) (*metrics, error) {
	const ns = "coordinator"
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "events_total", Help: "Sidecar events applied, by type.",
	}, []string{"type"})
	late := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "late_events_total",
		Help: "Events that changed nothing because another stream's event made them moot first, by reason: " +
			"txn_ended (its transaction had ended), sub_returned (its sub-transaction had returned), " +
			"early_limit (a DONE before its CALL, over the per-transaction bound).",
	}, []string{"reason"})
	m := &metrics{
		eventErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "event_errors_total", Help: "Sidecar events rejected, by gRPC code.",
		}, []string{"code"}),
		ownership: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "ownership_refusals_total",
			Help: "Sidecar events refused because the session does not own what they are about " +
				"(a CALL, RETURN or DONE about another service's sub-transaction, an END of another session's transaction), by event type.",
		}, []string{"type"}),
		learnedEdges: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "learned_edges_total", Help: "Static edges learned from calls nobody declared.",
		}),
		registrations: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "registrations_total", Help: "Sidecar registrations (new and resumed sessions).",
		}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "heartbeats_total", Help: "Sidecar heartbeats received.",
		}),
		sessionsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "sessions_dropped_total", Help: "Sessions removed, by reason.",
		}, []string{"reason"}),
		forgotten: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "forgotten_total",
			Help: "Unused services and versions forgotten, and finished updates deleted past their retention, by kind.",
		}, []string{"kind"}),
		implicitExpired: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Name: "implicit_expired_total",
			Help: "Transactions known only from downstream calls, ended because their Begin never arrived.",
		}),
		beginWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "begin_wait_seconds",
			Help:    "Time CALLs were held for their transaction's BEGIN during an update, by outcome: begun, or timeout (BeginWaitTimeout).",
			Buckets: prometheus.ExponentialBuckets(1e-3, 4, 8),
		}, []string{"outcome"}),
		batchLockWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "batch_lock_wait_seconds",
			Help:    "Per event batch, the time its stream waited for the event lock.",
			Buckets: prometheus.ExponentialBuckets(1e-5, 2, 16),
		}),
		batchLockHeld: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "batch_lock_held_seconds",
			Help:    "Per event batch, the time it held the event lock (its events, the phases stored meanwhile, the progress check).",
			Buckets: prometheus.ExponentialBuckets(1e-5, 2, 16),
		}),
		freenessSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: ns, Name: "freeness_query_seconds", Help: "Time to answer a FREENESS query.",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10),
		}),
	}
	refusals := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "quota_refusals_total",
		Help: "Events refused because they went past a quota, by quota (the flag that sets it is in the refusal's message).",
	}, []string{"quota"})
	m.quarantined = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "quarantined_records_total",
		Help: "Records restore could not decode, moved to the quarantine prefix, by kind (update, session, service, route, pin, selfpreservation, txn).",
	}, []string{"kind"})
	m.quotaRefusals = make(map[string]prometheus.Counter)
	for _, l := range quotaLabels() {
		m.quotaRefusals[l] = refusals.WithLabelValues(l)
	}
	for t := range int32(pb.EventType_EVENT_TYPE_END) + 1 {
		name := "unspecified"
		if t > 0 {
			name = pb.EventType(t).String()[len("EVENT_TYPE_"):]
		}
		m.events = append(m.events, events.WithLabelValues(name))
	}
	m.lateEvents = make([]prometheus.Counter, numLateReasons)
	for r := range int32(numLateReasons) {
		if r > 0 {
			name := strings.ToLower(pb.LateReason(r).String()[len("LATE_REASON_"):])
			m.lateEvents[r] = late.WithLabelValues(name)
		}
	}
	if reg == nil {
		return m, nil
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: name, Help: help}, f)
	}
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: name, Help: help}, f)
	}
	cs := []prometheus.Collector{
		events, m.eventErrors, m.ownership, late, m.learnedEdges, m.registrations, m.heartbeats,
		m.sessionsDropped, m.freenessSeconds, m.implicitExpired, m.forgotten, m.beginWait, refusals, m.quarantined,
		m.batchLockWait, m.batchLockHeld,
		gauge("live_transactions", "Live distributed transactions.", func() float64 { return float64(c.Live()) }),
		gauge("sessions", "Sidecar sessions with a live lease.", func() float64 { return float64(c.sess.lenShared()) }),
		gauge("services", "Services in the static graph.", func() float64 {
			c.mu.Lock()
			defer c.mu.Unlock()
			return float64(c.eng.NumServices())
		}),
		counter("early_done_total", "DONE hints that came before the CALL of their sub-transaction (from another stream), kept to apply as it starts.",
			func() float64 { return float64(c.reorderStats().EarlyDone) }),
		counter("early_done_applied_total", "Early DONE hints applied as their sub-transaction started.",
			func() float64 { return float64(c.reorderStats().EarlyDoneApplied) }),
		counter("early_done_dropped_total", "Early DONE hints dropped unapplied: their transaction ended first, or never started.",
			func() float64 { return float64(c.reorderStats().EarlyDoneDropped) }),
		counter("writebehind_txns_total", "etcd transactions committed by the write-behind.",
			func() float64 { return float64(c.wb.Stats().Txns) }),
		counter("writebehind_ops_total", "Record writes committed by the write-behind.",
			func() float64 { return float64(c.wb.Stats().Ops) }),
		counter("writebehind_failures_total", "Write-behind etcd transactions that failed (and were retried).",
			func() float64 { return float64(c.wb.Stats().Failures) }),
		gauge("writebehind_pending", "Transaction records waiting to be written.", func() float64 {
			c.mu.Lock()
			defer c.mu.Unlock()
			return float64(c.eng.DirtyLen())
		}),
		gauge("self_preservation_active", "1 while self-preservation is active (DESIGN.md §7), else 0.", func() float64 {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.sp.active {
				return 1
			}
			return 0
		}),
		gauge("self_preservation_queued_sessions", "Sessions whose lease expired and whose expiry self-preservation has queued.", func() float64 {
			c.mu.Lock()
			defer c.mu.Unlock()
			return float64(c.sp.queued)
		}),
		counter("self_preservation_activations_total", "Times self-preservation started.", func() float64 {
			c.mu.Lock()
			defer c.mu.Unlock()
			return float64(c.sp.activations)
		}),
	}
	for _, col := range cs {
		if err := reg.Register(col); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observeBatch(counts, late []int, errs *errorCounts) {
	for t, n := range counts {
		if n > 0 {
			m.events[t].Add(float64(n))
		}
	}
	for r, n := range late {
		if n > 0 {
			m.lateEvents[r].Add(float64(n))
		}
	}
	for code, n := range errs {
		if n > 0 {
			m.eventErrors.WithLabelValues(codes.Code(code).String()).Add(float64(n))
		}
	}
}

func (c *Coordinator) reorderStats() graph.ReorderStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.eng.ReorderStats()
}
