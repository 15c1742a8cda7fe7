package loadsim

// Oracle is the version-consistency check of DESIGN.md §1 on its own: it
// is told, sub-transaction by sub-transaction, which version of which
// service each transaction ran on, and says when one ran on two versions
// of a service. Sim checks its load with it; tests that produce the
// versions some other way (the Istio rendering's evaluator) use it alone.
// It also checks sets of services updated together (DESIGN.md §4.8): a
// transaction that ran on the old version of one service of a watched set
// and on the new version of another ran a mixed set.
// And it checks lanes (DESIGN.md §4.9): a transaction that entered a lane
// with a member map and ran a member on another version than the map's
// left its lane; for such a transaction the set rule applies only to the
// set members outside its lane.
// It is not safe for concurrent use: its user locks.
type Oracle struct {
	ran  map[string]map[string]string // txn -> service -> version
	sets []Set
	// side is, per transaction and watched set, the member it first ran
	// on and whether that was its new version; mixed marks the sets a
	// transaction was counted mixed in already.
	side  map[string]map[int]setSide
	mixed map[string]map[int]bool
	// lane is each lane transaction's entry member map; left marks those
	// counted as having left it.
	lane map[string]map[string]string
	left map[string]bool
}

// Set is a set of services updated together: service -> its old and new
// versions.
type Set map[string][2]string

type setSide struct {
	service, version string
	isNew            bool
}

// NewOracle returns an oracle that has seen nothing.
func NewOracle() *Oracle {
	return &Oracle{ran: map[string]map[string]string{}, side: map[string]map[int]setSide{}, mixed: map[string]map[int]bool{},
		lane: map[string]map[string]string{}, left: map[string]bool{}}
}

// WatchSet makes RanSet check set: from now on, a transaction that runs on
// the old version of one of its services and the new version of another
// ran a mixed set.
func (o *Oracle) WatchSet(set Set) { o.sets = append(o.sets, set) }

// UnwatchSets stops checking every watched set (their updates are over,
// and a later one may legitimately pair their versions otherwise).
func (o *Oracle) UnwatchSets() {
	o.sets = nil
	clear(o.side)
	clear(o.mixed)
}

// RanSet records that txn ran on service@version for the watched sets.
// When that is on the other side of a set than what txn ran there before,
// it returns that earlier service@version and true: a mixed set, reported
// once per transaction and set. A version of neither side is ignored.
func (o *Oracle) RanSet(txn, service, version string) (other string, mixed bool) {
	if _, inLane := o.lane[txn][service]; inLane {
		return "", false // its lane fixes it, whatever the set does
	}
	for i, set := range o.sets {
		vs, ok := set[service]
		if !ok || (version != vs[0] && version != vs[1]) {
			continue
		}
		isNew := version == vs[1]
		m := o.side[txn]
		if m == nil {
			m = map[int]setSide{}
			o.side[txn] = m
		}
		first, seen := m[i]
		if !seen {
			m[i] = setSide{service, version, isNew}
			continue
		}
		if first.isNew != isNew && !o.mixed[txn][i] {
			if o.mixed[txn] == nil {
				o.mixed[txn] = map[int]bool{}
			}
			o.mixed[txn][i] = true
			other, mixed = first.service+"@"+first.version, true
		}
	}
	return other, mixed
}

// Ran records that txn ran a sub-transaction on service@version. When txn
// ran on another version of service before, it returns that version and
// true: a violation. The next call is checked against the version of the
// last one, so a transaction that moved once counts one violation.
func (o *Oracle) Ran(txn, service, version string) (prev string, violation bool) {
	m := o.ran[txn]
	if m == nil {
		m = map[string]string{}
		o.ran[txn] = m
	}
	prev, seen := m[service]
	m[service] = version
	return prev, seen && prev != version
}

// EnterLane records that txn entered a lane with members (service ->
// version), fixed at its entry.
func (o *Oracle) EnterLane(txn string, members map[string]string) { o.lane[txn] = members }

// RanLane records that txn ran on service@version for the lane check: when
// txn entered a lane whose map names service at another version, it
// returns that version and true, once per transaction (it left its lane).
func (o *Oracle) RanLane(txn, service, version string) (want string, left bool) {
	want, member := o.lane[txn][service]
	if !member || want == version || o.left[txn] {
		return want, false
	}
	o.left[txn] = true
	return want, true
}

// Forget drops what the oracle kept of a finished transaction.
func (o *Oracle) Forget(txn string) {
	delete(o.lane, txn)
	delete(o.left, txn)
	delete(o.ran, txn)
	delete(o.side, txn)
	delete(o.mixed, txn)
}
