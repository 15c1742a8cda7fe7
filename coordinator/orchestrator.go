package coordinator

import (
	"context"
	"log/slog"

	"github.com/coordinator/coordinator/coordinator/graph"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/storage"
)

// orchestrator drives the updates (DESIGN.md §4; update.go, failover.go):
// it starts them, asks each one's strategy (package strategy) what to do
// next, decides the calls to a service mid-update, holds the calls that
// must wait (BF's until the switch, those waiting for their BEGIN, those
// parked while a phase is stored), and owns the first-use pins on their
// way to etcd and the call decisions to send.
//
// Its state is the update table (updateTable), the pins pending commit and
// the decisions not sent yet; it runs under the event lock, since
// switching is atomic with event application (DESIGN.md §4.2), and uses
// the other components through their methods: the engine for freeness and
// blockers, the session table for acknowledgements, the catalog for
// routes, the routing publisher for update mode, the phase writer and pin
// committer for etcd. What it needs of event application is eventSide.
type orchestrator struct {
	cfg     *Config
	lg      *slog.Logger
	keys    storage.Keys
	metrics *metrics
	ev      eventSide

	eng     *graph.Engine
	sess    *sessionTable
	cat     *catalog
	routing *routingPublisher
	upd     *updateTable
	phases  *phaseWriter
	pins    *pinCommitter
	// analyses writes the canaries' analysis windows behind (canary_store.go).
	analyses analysisStore

	// pendingPins are the pins being committed, by key: a later answer
	// that relies on one waits for it too.
	pendingPins map[string]*storage.Op
	out         []decision // call decisions to send once the event lock is released
	// mootPins are the pins of ended transactions, to delete (mootpins.go).
	mootPins mootQueue
	// laneKick is told when an update ends: it may promote a lane.
	laneKick func()
}

// eventSide is what the orchestrator needs of event application (the
// Coordinator): its lock, for admin calls and for a phase write an
// operator waits for; the application of a decided CALL to the engine;
// the holds on switching; the etcd writes of this replica (fenced).
type eventSide interface {
	lock()
	unlock()
	unlockAndSend()
	context() context.Context
	callLocked(s *session, ev *pb.Event, to graph.ServiceID, version graph.VersionID) error
	switchHoldLocked() string
	selfPreservingLocked() bool
	commit(ctx context.Context, ops ...storage.Op) error
}

// emit queues a call decision, sent once the event lock is released.
func (o *orchestrator) emit(d decision) { o.out = append(o.out, d) }

// takeDecisions returns the queued decisions; the event lock is held.
func (o *orchestrator) takeDecisions() []decision {
	out := o.out
	o.out = nil
	return out
}

// setUpdateModeLocked turns update mode of u's services on or off, and
// returns the routing revision that carries it for all of them.
func (o *orchestrator) setUpdateModeLocked(u *update, on bool) uint64 {
	u.updateMode = on
	var rev uint64
	for _, m := range u.members {
		rev = max(rev, o.routing.setUpdateMode(m.svc, m.name, on))
	}
	return rev
}

// The Coordinator is the orchestrator's event side.

func (c *Coordinator) lock()                    { c.mu.Lock() }
func (c *Coordinator) unlock()                  { c.mu.Unlock() }
func (c *Coordinator) context() context.Context { return c.ctx }

// lockKey takes the registration lock of key (keylock.go).
func (c *Coordinator) lockKey(key string) (unlock func()) { return c.regLocks.lock(key) }

// fenced says whether a write failed its fence: this replica acts no more.
func (c *Coordinator) fenced() bool { return c.fencedFlag.Load() }
