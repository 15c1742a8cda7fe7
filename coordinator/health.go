package coordinator

import (
	"context"
	"fmt"
	"time"
)

// Health thresholds.
const (
	healthEtcdTimeout     = 2 * time.Second
	maxFlushLatency       = time.Second
	healthCapacityPercent = 90
)

// HealthReport is what /health returns, ServiceCenter style: etcd is
// reachable, the coordinator is within its capacity, and etcd writes are
// not slow. Self-preservation is reported but is not a problem: the
// coordinator is doing what it should. A restart would lose the
// transactions it keeps (they are in memory only: their records went with
// the expired leases), though not the mode: it is stored, and resumed with
// every switch held until the queued sessions are back or their grace ends.
type HealthReport struct {
	Healthy          bool     `json:"healthy"`
	Problems         []string `json:"problems,omitempty"`
	Etcd             string   `json:"etcd"`
	LiveTransactions int      `json:"live_transactions"`
	MaxTransactions  int      `json:"max_transactions"`
	Sessions         int      `json:"sessions"`
	// MaxSessions is --max-sessions: past it a new instance's Register is
	// refused. Not a problem that fails /health: a client that fills the
	// table must not make the replica look down.
	MaxSessions    int     `json:"max_sessions"`
	FlushLatencyMS float64 `json:"write_behind_avg_latency_ms"`
	PendingRecords int     `json:"pending_records"`
	// SelfPreservation is the self-preservation mode (DESIGN.md §7).
	SelfPreservation SelfPreservationReport `json:"self_preservation"`
	// Quarantine lists the records restore could not decode and moved
	// aside (quarantine.go), if any. The replica serves without them: not
	// a problem that makes /health fail, but one an operator must read.
	Quarantine *QuarantineReport `json:"quarantine,omitempty"`
}

// Health checks etcd, capacity and write latency.
func (c *Coordinator) Health(ctx context.Context) HealthReport {
	r := HealthReport{Etcd: "ok", MaxTransactions: c.cfg.MaxLiveTxns, MaxSessions: c.cfg.MaxSessions}
	ctx, cancel := context.WithTimeout(ctx, healthEtcdTimeout)
	defer cancel()
	if err := c.store.Check(ctx); err != nil {
		r.Etcd = err.Error()
		r.Problems = append(r.Problems, "etcd: "+err.Error())
	} else if q, err := ReadQuarantine(ctx, c.store); err == nil {
		r.Quarantine = q
	}
	c.mu.Lock()
	r.LiveTransactions = c.eng.Live()
	r.Sessions = c.sess.len()
	r.PendingRecords = c.eng.DirtyLen()
	r.SelfPreservation = c.sp.selfPreservationReportLocked()
	c.mu.Unlock()
	if r.LiveTransactions*100 >= r.MaxTransactions*healthCapacityPercent {
		r.Problems = append(r.Problems, fmt.Sprintf("capacity: %d live transactions, limit %d", r.LiveTransactions, r.MaxTransactions))
	}
	st := c.wb.Stats()
	r.FlushLatencyMS = float64(st.AvgLatency) / float64(time.Millisecond)
	if st.AvgLatency > maxFlushLatency {
		r.Problems = append(r.Problems, fmt.Sprintf("etcd writes are slow: average flush %v", st.AvgLatency))
	}
	r.Healthy = len(r.Problems) == 0
	return r
}
