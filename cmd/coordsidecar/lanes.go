package main

import (
	"net/http"
	"net/textproto"
	"sync"

	"github.com/coordinator/coordinator/sidecar"
)

// lanes carries a transaction's lane snapshot (DESIGN.md §4.9) across the
// application, as traces carries its trace context. The inbound leg gives
// the application the lane header (sidecar.HeaderLane) with the other mesh
// headers; an application that copies only HeaderTxn and HeaderSub to its
// outbound calls would make them leave the lane, so the inbound leg keeps
// the lane header under the sub-transaction while the request runs, and
// the outbound leg gives a call that names that sub-transaction but has no
// lane header the one kept.
type lanes struct {
	mu   sync.Mutex
	live map[traceKey]string // sub-transaction -> HeaderLane's value
}

// hdrLane is sidecar.HeaderLane in its canonical form (see hdrTxn).
var hdrLane = textproto.CanonicalMIMEHeaderKey(sidecar.HeaderLane)

func newLanes() *lanes { return &lanes{live: map[traceKey]string{}} }

// remember keeps tx's lane header, if it runs in a lane, while the inbound
// request runs: call forget when it ends.
func (l *lanes) remember(tx sidecar.Txn) (forget func()) {
	v := tx.LaneHeader()
	if v == "" {
		return func() {}
	}
	k := traceKey{tx.ID, formatSub(tx.Sub)}
	l.mu.Lock()
	l.live[k] = v
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.live, k)
		l.mu.Unlock()
	}
}

// restore returns r with the lane header kept for the sub-transaction its
// mesh headers name, if it has none of its own.
func (l *lanes) restore(r *http.Request) *http.Request {
	k := traceKey{r.Header.Get(hdrTxn), r.Header.Get(hdrSub)}
	if k.txn == "" || k.sub == "" || r.Header.Get(hdrLane) != "" {
		return r
	}
	l.mu.Lock()
	v := l.live[k]
	l.mu.Unlock()
	if v == "" {
		return r
	}
	r = r.Clone(r.Context())
	r.Header[hdrLane] = []string{v}
	return r
}
