package main

import (
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"github.com/coordinator/coordinator/coordinator"
)

// quotaFlags are the per-session quotas (issue 13; coordinator/quota.go):
// an event past one is refused with ResourceExhausted naming the flag.
type quotaFlags struct {
	liveTxns, services, versions, learned, learnedTotal, burst *int
	sessions, peerSessions, rejectedBurst                      *int
	eventRate, rejectedRate                                    *float64
	overRateCloseAfter                                         *time.Duration
}

func registerQuotaFlags(fs *pflag.FlagSet) *quotaFlags {
	return &quotaFlags{
		liveTxns: fs.Int("max-live-txns-per-session", coordinator.DefaultMaxLiveTxnsPerSession,
			"live transactions one sidecar session may own (its BEGINs and the transactions its CALLs start); one more is refused"),
		services: fs.Int("max-new-services-per-session", coordinator.DefaultMaxNewServicesPerSession,
			"services one session may introduce by calling names nobody registered or declared"),
		versions: fs.Int("max-new-versions-per-session", coordinator.DefaultMaxNewVersionsPerSession,
			"versions one session may introduce by naming them in its CALLs"),
		learned: fs.Int("max-learned-edges-per-session", coordinator.DefaultMaxLearnedEdgesPerSession,
			"static edges one session may teach by undeclared calls"),
		learnedTotal: fs.Int("max-learned-edges", coordinator.DefaultMaxLearnedEdges,
			"static edges learned from undeclared calls, from all sessions"),
		eventRate: fs.Float64("max-events-per-second", coordinator.DefaultEventsPerSecond,
			"events per second one session may send (token bucket; see --event-burst)"),
		burst: fs.Int("event-burst", coordinator.DefaultEventBurst,
			"events one session may send at once above --max-events-per-second (at least one full batch, 65536)"),
		rejectedRate: fs.Float64("max-rejected-events-per-second", coordinator.DefaultRejectedPerSecond,
			"events of one session the coordinator may reject per second (unknown transactions, out of order, ...; token bucket, see --rejected-event-burst); past it the session's events are refused and its stream is not read until the budget refills"),
		rejectedBurst: fs.Int("rejected-event-burst", coordinator.DefaultRejectedBurst,
			"rejected events one session may have at once above --max-rejected-events-per-second"),
		sessions: fs.Int("max-sessions", coordinator.DefaultMaxSessions,
			"sidecar sessions known at once (connected, or disconnected until their lease expires); a Register of a new instance past it is refused"),
		peerSessions: fs.Int("max-sessions-per-peer", coordinator.DefaultMaxSessionsPerPeer,
			"sidecar sessions known at once from one peer (its workload identity, or its address without one)"),
		overRateCloseAfter: fs.Duration("over-rate-close-after", coordinator.DefaultOverRateCloseAfter,
			"how long a session may stay over --max-events-per-second (its stream not read between refusals) before its stream is closed with ResourceExhausted"),
	}
}

func (q *quotaFlags) validate() error {
	for name, v := range map[string]int{
		"--max-live-txns-per-session": *q.liveTxns, "--max-new-services-per-session": *q.services,
		"--max-new-versions-per-session": *q.versions, "--max-learned-edges-per-session": *q.learned,
		"--max-learned-edges": *q.learnedTotal, "--max-sessions": *q.sessions, "--max-sessions-per-peer": *q.peerSessions,
		"--rejected-event-burst": *q.rejectedBurst,
	} {
		if v <= 0 {
			return fmt.Errorf("%s %d: want a positive number", name, v)
		}
	}
	if !(*q.eventRate > 0) {
		return fmt.Errorf("--max-events-per-second %v: want a positive rate", *q.eventRate)
	}
	if !(*q.rejectedRate > 0) {
		return fmt.Errorf("--max-rejected-events-per-second %v: want a positive rate", *q.rejectedRate)
	}
	if *q.overRateCloseAfter <= 0 {
		return fmt.Errorf("--over-rate-close-after %v: want a positive duration", *q.overRateCloseAfter)
	}
	if *q.burst < coordinator.MaxEventsPerBatch {
		return fmt.Errorf("--event-burst %d: want at least %d, one full batch", *q.burst, coordinator.MaxEventsPerBatch)
	}
	return nil
}

func (q *quotaFlags) apply(c *coordinator.Config) {
	c.MaxLiveTxnsPerSession = *q.liveTxns
	c.MaxNewServicesPerSession = *q.services
	c.MaxNewVersionsPerSession = *q.versions
	c.MaxLearnedEdgesPerSession = *q.learned
	c.MaxLearnedEdges = *q.learnedTotal
	c.MaxEventsPerSecond = *q.eventRate
	c.EventBurst = *q.burst
	c.OverRateCloseAfter = *q.overRateCloseAfter
	c.MaxRejectedPerSecond = *q.rejectedRate
	c.RejectedBurst = *q.rejectedBurst
	c.MaxSessions = *q.sessions
	c.MaxSessionsPerPeer = *q.peerSessions
}
