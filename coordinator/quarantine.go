package coordinator

import (
	"context"
	"fmt"

	"github.com/coordinator/coordinator/storage"
)

// Quarantine (issue 13, "never bricked"). A record restore cannot decode
// (an update, session, service, route, pin, self-preservation or
// transaction record) would otherwise fail every replica's restore, and so
// every term, forever. Instead it is moved, in one etcd transaction
// conditional on the fence and on the record being unchanged, to
// storage.Keys.Quarantined(key) (without a lease: it stays for an operator
// to read and delete), counted in coordinator_quarantined_records_total by
// kind, logged once with its key and why, and shown in /health (which
// lists the quarantine prefix). Restore goes on without it: what the record
// said is lost, as if it had never been written; a transaction record
// lost so is no worse than one never flushed (its transaction, if still
// live, comes back as legacy through its entry's resync).

// maxHealthQuarantined bounds the quarantined keys /health lists.
const maxHealthQuarantined = 10

// badRecord is a record restore could not decode, and why.
type badRecord struct {
	rec storage.Record
	err error
}

// quarantine moves each bad record of kind to the quarantine prefix.
func (c *Coordinator) quarantine(ctx context.Context, kind string, bad []badRecord) error {
	for _, b := range bad {
		key := b.rec.Key
		to, err := c.store.Quarantine(ctx, b.rec)
		if err != nil {
			// Rewritten meanwhile (storage.ErrChanged), or this replica no
			// longer leads (storage.ErrFenced): the next restore reads it
			// again.
			return fmt.Errorf("%w: quarantine %s record %q: %w", ErrUnavailable, kind, key, err)
		}
		c.metrics.quarantined.WithLabelValues(kind).Inc()
		c.lg.Error("restore: undecodable record moved to quarantine; restore goes on without it",
			"kind", kind, "key", key, "quarantine_key", to, "error", b.err.Error())
	}
	return nil
}

// QuarantineReport is the quarantine prefix as /health shows it.
type QuarantineReport struct {
	// Records is how many records are under the prefix.
	Records int64 `json:"records"`
	// Prefix is where they are.
	Prefix string `json:"prefix"`
	// Keys are the first of them (at most 10), each its original key's
	// path under the coordinator's prefix.
	Keys []string `json:"keys"`
}

// ReadQuarantine lists the quarantine prefix of st (keys only): nil if it
// is empty.
func ReadQuarantine(ctx context.Context, st storage.Store) (*QuarantineReport, error) {
	n, keys, err := st.Quarantined(ctx, maxHealthQuarantined)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, nil
	}
	return &QuarantineReport{Records: n, Prefix: st.Keys().Quarantine(), Keys: keys}, nil
}
