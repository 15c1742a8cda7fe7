package storage

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultPrefix is the root of the coordinator's key space.
const DefaultPrefix = "/coordinator/v1/"

// MaxNameLen bounds a name that becomes one segment of a key (service,
// instance, transaction or update id). It leaves room for W3C trace ids
// (32 hex), UUIDs and DNS names (253).
const MaxNameLen = 253

// Keys lays out the coordinator's key space under Prefix:
//
//	<prefix>services/<service>          service record and its static edges
//	<prefix>sessions/<instance>         sidecar session, on the session's lease
//	<prefix>txns/<txn>                  transaction record, on the root session's lease
//	<prefix>routes/<service>            default version of a service
//	<prefix>updates/<update>            update plan, phase and history
//	<prefix>pins/<service>/<txn>        first-use pin of a service mid-update
//	<prefix>selfpreservation            self-preservation mode and its queue, while active
//	<prefix>analysis/<update>           a canary's analysis windows, while in a canary step
//	<prefix>quarantine/<key>            a record restore could not decode, moved here from
//	                                    <prefix><key> (kept, without a lease, for an operator)
//	<prefix>election                    leader election prefix (concurrency.Election)
//
// The zero value uses DefaultPrefix. Methods taking names do not validate
// them: check names that come from outside with ValidName first.
type Keys struct {
	// Prefix is the root; a missing trailing "/" is added.
	Prefix string
}

// Root returns the prefix every key starts with, ending in "/".
func (k Keys) Root() string {
	p := k.Prefix
	if p == "" {
		return DefaultPrefix
	}
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}

// Services is the prefix of every service record.
func (k Keys) Services() string { return k.Root() + relServices }

// Service is the key of a service record.
func (k Keys) Service(name string) string { return k.Root() + relService(name) }

// Sessions is the prefix of every sidecar session.
func (k Keys) Sessions() string { return k.Root() + relSessions }

// Session is the key of a sidecar session (an instance).
func (k Keys) Session(instance string) string { return k.Root() + relSession(instance) }

// Txns is the prefix of every transaction record.
func (k Keys) Txns() string { return k.Root() + relTxns }

// Txn is the key of a distributed transaction's record.
func (k Keys) Txn(id string) string { return k.Root() + relTxn(id) }

// Routes is the prefix of every route (default version per service).
func (k Keys) Routes() string { return k.Root() + relRoutes }

// Route is the key of a service's route.
func (k Keys) Route(service string) string { return k.Root() + relRoute(service) }

// Updates is the prefix of every update.
func (k Keys) Updates() string { return k.Root() + relUpdates }

// Update is the key of an update.
func (k Keys) Update(id string) string { return k.Root() + relUpdate(id) }

// Pins is the prefix of every pin.
func (k Keys) Pins() string { return k.Root() + relPins }

// ServicePins is the prefix of the pins of one service.
func (k Keys) ServicePins(service string) string { return k.Root() + relServicePins(service) }

// Pin is the key of transaction txn's first-use pin of service.
func (k Keys) Pin(service, txn string) string { return k.Root() + relPin(service, txn) }

// SelfPreservation is the key of the self-preservation record
// (DESIGN.md §7): present only while the mode is active, so that a new
// leader resumes it.
func (k Keys) SelfPreservation() string { return k.Root() + relSelfPreservation }

// Analyses is the prefix of every canary's analysis record.
func (k Keys) Analyses() string { return k.Root() + relAnalyses }

// Analysis is the key of the analysis record of canary update id
// (DESIGN.md §4.7): its outcome windows, so that a new leader continues
// them.
func (k Keys) Analysis(id string) string { return k.Root() + relAnalysis(id) }

// Lanes is the prefix of every lane (DESIGN.md §4.9).
func (k Keys) Lanes() string { return k.Root() + relLanes }

// Lane is the key of one lane.
func (k Keys) Lane(name string) string { return k.Root() + relLane(name) }

// Quarantine is the prefix of the records moved aside because restore
// could not decode them.
func (k Keys) Quarantine() string { return k.Root() + relQuarantine }

// Quarantined is where the record at key (under Root) is moved when it
// cannot be decoded: Quarantine() followed by key's path under Root.
func (k Keys) Quarantined(key string) string {
	return k.Quarantine() + strings.TrimPrefix(key, k.Root())
}

// Election is the election prefix, for concurrency.NewElection (which
// appends "/").
func (k Keys) Election() string { return k.Root() + "election" }

// ValidName checks a name that becomes one segment of a key: not empty, at
// most MaxNameLen bytes, valid UTF-8, with no '/', no space and no control
// character. kind ("service", "instance", ...) names it in the error,
// which wraps ErrInvalidName.
func ValidName(kind, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s name is empty", ErrInvalidName, kind)
	case len(s) > MaxNameLen:
		return fmt.Errorf("%w: %s name %q... is %d bytes, more than %d", ErrInvalidName, kind, s[:32], len(s), MaxNameLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s name %q is not valid UTF-8", ErrInvalidName, kind, s)
	}
	for i, r := range s {
		switch {
		case r == '/':
			return fmt.Errorf("%w: %s name %q contains '/' at byte %d", ErrInvalidName, kind, s, i)
		case unicode.IsSpace(r) || unicode.IsControl(r):
			return fmt.Errorf("%w: %s name %q contains %U at byte %d", ErrInvalidName, kind, s, r, i)
		}
	}
	return nil
}

// The key layout under Root, shared by Keys and the Ops.
const (
	relServices         = "services/"
	relSessions         = "sessions/"
	relTxns             = "txns/"
	relRoutes           = "routes/"
	relUpdates          = "updates/"
	relPins             = "pins/"
	relSelfPreservation = "selfpreservation"
	relQuarantine       = "quarantine/"
	relAnalyses         = "analysis/"
	relLanes            = "lanes/"
)

func relService(name string) string        { return relServices + name }
func relSession(instance string) string    { return relSessions + instance }
func relTxn(id string) string              { return relTxns + id }
func relRoute(service string) string       { return relRoutes + service }
func relUpdate(id string) string           { return relUpdates + id }
func relAnalysis(id string) string         { return relAnalyses + id }
func relServicePins(service string) string { return relPins + service + "/" }
func relPin(service, txn string) string    { return relServicePins(service) + txn }
func relLane(name string) string           { return relLanes + name }

// Abs is the full key of rel, a key under Root (Op.Key).
func (k Keys) Abs(rel string) string { return k.Root() + rel }
