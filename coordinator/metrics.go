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
	identity        *prometheus.CounterVec // registrations refused, by reason
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
	// batchLockWait and batchLockHeld: per event batch, how long it
	// waited to be applied (for the applier, behind other streams'
	// batches, then for the event lock) and how long it then held the lock
	// (the batch's events, the phases stored meanwhile, the progress
	// check). Two clock reads and two observations per batch.
	batchLockWait prometheus.Histogram
	batchLockHeld prometheus.Histogram

	// Updates (DESIGN.md §4). Counters and histograms are by strategy
	// (wf, bf, cv, naive); ended and duration also by outcome (done,
	// aborted, failed); phase durations by the phase that ended.
	updatesStarted *prometheus.CounterVec
	updatesEnded   *prometheus.CounterVec
	updateSeconds  *prometheus.HistogramVec
	phaseSeconds   *prometheus.HistogramVec
	// callHolds counts the times a call to a service under update was
	// held, by holdReason; a call may be held more than once (parked
	// while a phase is stored, then held for the switch).
	callHolds map[holdReason]prometheus.Counter
	// pinCommit: each etcd transaction of the pin committer (a batch of
	// first-use pins); callDecided: per call to a service under update,
	// from its CALL's application to its decision being sent (holds and
	// the pin's commit included), by strategy.
	pinCommit   prometheus.Histogram
	callDecided map[pb.Strategy]prometheus.Observer
}

// holdReason says why a call to a service under update was held.
type holdReason string

const (
	holdStrategy   holdReason = "strategy"    // the strategy waits for the switch (BF)
	holdBegin      holdReason = "begin"       // waiting for its transaction's BEGIN (CV)
	holdPhaseWrite holdReason = "phase_write" // parked while the update's next phase is stored
)

// updateStrategies are the strategies' label values, in protocol order.
func updateStrategies() []pb.Strategy {
	return []pb.Strategy{pb.Strategy_STRATEGY_WF, pb.Strategy_STRATEGY_BF, pb.Strategy_STRATEGY_CV, pb.Strategy_STRATEGY_NAIVE}
}

// strategyLabel is a strategy's label value: wf, bf, cv or naive.
func strategyLabel(k pb.Strategy) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "STRATEGY_"))
}

// phaseLabel is a phase's label value: preparing, waiting, draining,
// switched, done, aborted or failed.
func phaseLabel(p pb.Phase) string { return strings.ToLower(strings.TrimPrefix(p.String(), "PHASE_")) }

func newMetrics(c *Coordinator, reg prometheus.Registerer) (*metrics, error) {
	const ns = "coordinator"
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "events_total", Help: "Sidecar events applied, by type.",
	}, []string{"type"})
	late := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "late_events_total",
		Help: "Events that changed nothing because another stream's event made them moot first, by reason: " +
			"txn_ended (its transaction had ended), sub_returned (its sub-transaction had returned), " +
			"early_limit (a DONE before its CALL, over the per-transaction bound), " +
			"legacy (a RETURN in a transaction begun before a failover, which the leader never saw start).",
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
		identity: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "identity_refusals_total",
			Help: "Registrations refused because of the sidecar's workload identity: " +
				`reason="service" (the policy does not let it register as the service), "instance" (another identity holds the instance id).`,
		}, []string{"reason"}),
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
			Help:    "Per event batch, the time from its stream handing it in until the event lock was held to apply it (the wait for the applier, behind other streams' batches, and for the lock).",
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
	m.updatesStarted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "updates_started_total", Help: "Updates started, by strategy.",
	}, []string{"strategy"})
	m.updatesEnded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "updates_ended_total",
		Help: "Updates that ended, by strategy and outcome (done, aborted, failed; an abort after a CV switch ends once the new version is drained).",
	}, []string{"strategy", "outcome"})
	m.updateSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: ns, Name: "update_duration_seconds", Help: "Duration of the updates that ended, from start to end, by strategy and outcome.",
		Buckets: prometheus.ExponentialBuckets(0.01, 4, 10),
	}, []string{"strategy", "outcome"})
	m.phaseSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: ns, Name: "update_phase_duration_seconds",
		Help:    "Time updates spent in a phase, observed as it ends, by strategy and phase (preparing, waiting, draining, switched, aborted).",
		Buckets: prometheus.ExponentialBuckets(1e-3, 4, 10),
	}, []string{"strategy", "phase"})
	holds := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: ns, Name: "update_call_holds_total",
		Help: "Times a call to a service under update was held for its decision, by reason: strategy (BF waits for the switch), " +
			"begin (its transaction's BEGIN had not arrived), phase_write (the update's next phase was being stored).",
	}, []string{"reason"})
	m.callHolds = make(map[holdReason]prometheus.Counter)
	for _, r := range []holdReason{holdStrategy, holdBegin, holdPhaseWrite} {
		m.callHolds[r] = holds.WithLabelValues(string(r))
	}
	m.pinCommit = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: ns, Name: "pin_commit_seconds",
		Help:    "Time of each etcd transaction that commits a batch of first-use pins (a call's answer waits for its pin).",
		Buckets: prometheus.ExponentialBuckets(1e-4, 2, 16),
	})
	decided := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: ns, Name: "update_call_decision_seconds",
		Help:    "Per call to a service under update, the time from its CALL's application to its decision being sent (holds and the pin's commit included), by strategy.",
		Buckets: prometheus.ExponentialBuckets(1e-5, 4, 12),
	}, []string{"strategy"})
	m.callDecided = make(map[pb.Strategy]prometheus.Observer)
	for _, k := range updateStrategies() {
		m.callDecided[k] = decided.WithLabelValues(strategyLabel(k))
		m.updatesStarted.WithLabelValues(strategyLabel(k))
		for _, o := range []pb.Phase{pb.Phase_PHASE_DONE, pb.Phase_PHASE_ABORTED, pb.Phase_PHASE_FAILED} {
			m.updatesEnded.WithLabelValues(strategyLabel(k), phaseLabel(o))
		}
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
	// By type: BEGIN, CALL, RETURN, END. An event of no type is rejected
	// (event_errors_total), never applied: it has no label; its slot
	// counts into a counter nobody exports.
	m.events = append(m.events, prometheus.NewCounter(prometheus.CounterOpts{Name: "unexported"}))
	for t := int32(1); t <= int32(pb.EventType_EVENT_TYPE_END); t++ {
		m.events = append(m.events, events.WithLabelValues(pb.EventType(t).String()[len("EVENT_TYPE_"):]))
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
		events, m.eventErrors, m.ownership, m.identity, late, m.learnedEdges, m.registrations, m.heartbeats,
		m.sessionsDropped, m.freenessSeconds, m.implicitExpired, m.forgotten, m.beginWait, refusals, m.quarantined,
		m.batchLockWait, m.batchLockHeld,
		m.updatesStarted, m.updatesEnded, m.updateSeconds, m.phaseSeconds, holds, m.pinCommit, decided,
		updateGauges{c},
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

// updateGauges are the gauges of the updates in progress, read at scrape
// time: coordinator_update_phase (1, labelled with the update's service,
// strategy and current phase; one series per service under update) and
// coordinator_update_held_calls (calls held now, per service).
type updateGauges struct{ c *Coordinator }

var (
	updatePhaseDesc = prometheus.NewDesc("coordinator_update_phase",
		"1 for each service under update, labelled with the update's strategy and current phase (preparing, waiting, draining, switched, or aborted while a CV rollback drains).",
		[]string{"service", "strategy", "phase"}, nil)
	updateHeldDesc = prometheus.NewDesc("coordinator_update_held_calls",
		"Calls to a service under update held for their decision now, per service.",
		[]string{"service"}, nil)
)

func (g updateGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- updatePhaseDesc
	ch <- updateHeldDesc
}

func (g updateGauges) Collect(ch chan<- prometheus.Metric) {
	type row struct {
		svc   string
		strat pb.Strategy
		phase pb.Phase
		held  int
	}
	var rows []row
	g.c.mu.Lock()
	for u := range g.c.orch.upd.actives() {
		if !u.pending {
			for i, m := range recordMembers(u.rec) {
				held := 0
				if i == 0 {
					held = len(u.held) // a set's held calls count once
				}
				rows = append(rows, row{m.Service, u.rec.Strategy, u.rec.Phase, held})
			}
		}
	}
	g.c.mu.Unlock()
	for _, r := range rows {
		ch <- prometheus.MustNewConstMetric(updatePhaseDesc, prometheus.GaugeValue, 1, r.svc, strategyLabel(r.strat), phaseLabel(r.phase))
		ch <- prometheus.MustNewConstMetric(updateHeldDesc, prometheus.GaugeValue, float64(r.held), r.svc)
	}
}
