package strategy

import (
	"math/rand/v2"
	"testing"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// setTxn is a transaction as the set sees it (DESIGN §4.8): the side of
// the set it used (none yet if !used), and whether it may still call a
// service of the set.
type setTxn struct {
	used    bool
	side    Target
	mayCall bool
}

// setWorld answers a machine's Observation from its transactions as §4.8
// defines the set's: free when no transaction that used a service of the
// set may still call one; a side in use while such a transaction is on it.
type setWorld struct {
	seen
	txns []*setTxn
}

func (w *setWorld) Free() bool {
	for _, t := range w.txns {
		if t.used && t.mayCall {
			return false
		}
	}
	return true
}

func (w *setWorld) InUse(side Target) bool {
	for _, t := range w.txns {
		if t.used && t.mayCall && t.side == side {
			return true
		}
	}
	return false
}

// Each strategy, driven by random transactions over a set, keeps every
// transaction on one side: a call of a transaction that used a service of
// the set goes to the side it used (Same), whichever member it calls; WF
// and BF switch only when no transaction that used the set may call it
// again, CV's old side ends only when drained; and, the load over, every
// machine reaches DONE.
func TestSetMachinesKeepOneSidePerTransaction(t *testing.T) {
	for _, k := range []Kind{WF, BF, CV} {
		for seed := range uint64(200) {
			rng := rand.New(rand.NewPCG(seed, uint64(k)))
			st, _ := For(k)
			s := State{Phase: preparing, Options: st.Options(Options{})}
			w := &setWorld{}
			for step := 0; step < 400 && !s.Finished(); step++ {
				load := step < 200
				switch r := rng.IntN(4); {
				case r == 0 && load:
					w.txns = append(w.txns, &setTxn{mayCall: true})
				case r == 1 && len(w.txns) > 0:
					// A transaction calls a service of the set.
					tx := w.txns[rng.IntN(len(w.txns))]
					if !tx.mayCall {
						break
					}
					d := st.Decide(s, Call{Used: tx.used})
					switch {
					case d.Hold:
						if tx.used || k != BF || s.Switched {
							t.Fatalf("%s seed %d: held a call of a transaction used=%v switched=%v", Name(k), seed, tx.used, s.Switched)
						}
					case tx.used:
						if d.Target != Same {
							t.Fatalf("%s seed %d: a transaction on the %v side was sent to %v", Name(k), seed, tx.side, d.Target)
						}
					default:
						tx.used, tx.side = true, d.Target
					}
				case r == 2 && len(w.txns) > 0:
					// A transaction is done with the set (or ends).
					w.txns[rng.IntN(len(w.txns))].mayCall = false
				}
				if !load {
					for _, tx := range w.txns {
						tx.mayCall = false
					}
				}
				a := st.Next(s, w)
				switch a.Step {
				case Switch:
					if k != CV && !w.Free() {
						t.Fatalf("%s seed %d: switched while a transaction that used the set may call it", Name(k), seed)
					}
					s.Switched = true
				case Abandon:
					t.Fatalf("%s seed %d: abandoned: %s", Name(k), seed, a.Reason)
				}
				if a.Step != Wait {
					if k == CV && s.Phase == draining && a.Phase == switchedP && w.InUse(Old) {
						t.Fatalf("CV seed %d: old side ended while in use", seed)
					}
					s.Phase = a.Phase
				}
			}
			if s.Phase != pb.Phase_PHASE_DONE {
				t.Fatalf("%s seed %d: ended in %s, want DONE", Name(k), seed, s.Phase)
			}
		}
	}
}
