package loadsim

// Oracle is the version-consistency check of DESIGN.md §1 on its own: it
// is told, sub-transaction by sub-transaction, which version of which
// service each transaction ran on, and says when one ran on two versions
// of a service. Sim checks its load with it; tests that produce the
// versions some other way (the Istio rendering's evaluator) use it alone.
// It is not safe for concurrent use: its user locks.
type Oracle struct {
	ran map[string]map[string]string // txn -> service -> version
}

// NewOracle returns an oracle that has seen nothing.
func NewOracle() *Oracle { return &Oracle{ran: map[string]map[string]string{}} }

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

// Forget drops what the oracle kept of a finished transaction.
func (o *Oracle) Forget(txn string) { delete(o.ran, txn) }
