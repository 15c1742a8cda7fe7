package strategy

import (
	"errors"
	"fmt"
	"strings"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// ErrUnknown is returned by Parse for a name that is no strategy.
var ErrUnknown = errors.New("strategy: unknown strategy")

// Kind is an update strategy.
type Kind = pb.Strategy

// The strategies.
const (
	WF    = pb.Strategy_STRATEGY_WF
	BF    = pb.Strategy_STRATEGY_BF
	CV    = pb.Strategy_STRATEGY_CV
	NAIVE = pb.Strategy_STRATEGY_NAIVE
)

// Parse reads "wf", "bf", "cv" or "naive" (any case).
func Parse(s string) (Kind, error) {
	switch strings.ToLower(s) {
	case "wf":
		return WF, nil
	case "bf":
		return BF, nil
	case "cv":
		return CV, nil
	case "naive":
		return NAIVE, nil
	}
	return 0, fmt.Errorf("%w %q: want wf, bf, cv or naive", ErrUnknown, s)
}

// Name is the short lower-case name of k.
func Name(k Kind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "STRATEGY_"))
}

// SwitchesAtOnce reports whether k moves the default to the new version as
// soon as every sidecar is in update mode, rather than waiting for the
// service to be free.
func SwitchesAtOnce(k Kind) bool { return k == CV || k == NAIVE }

// Pins reports whether k commits a transaction's first use of the service
// (its pin) before answering, and routes its later calls by it.
func Pins(k Kind) bool { return k != NAIVE }

// Call is what the coordinator knows of a transaction calling the service.
type Call struct {
	// Used is the version the transaction used the service at first, if any
	// (hasPast: it used or runs on the service).
	Used    uint32
	HasUsed bool
}

// Decision says where a call goes; Hold means nowhere yet (BF).
type Decision struct {
	Version uint32
	Hold    bool
}

// Decide returns where a call goes under strategy k, with versions from
// (the old default) and to (the new one). switched says the default has
// moved to `to`; rollback says an update that had switched was aborted, so
// the default is back at `from` while transactions keep what they used.
func Decide(k Kind, switched, rollback bool, from, to uint32, c Call) Decision {
	if rollback {
		if c.HasUsed {
			return Decision{Version: c.Used}
		}
		return Decision{Version: from}
	}
	if k == NAIVE {
		if switched {
			return Decision{Version: to}
		}
		return Decision{Version: from}
	}
	if c.HasUsed {
		// The transaction stays on the version it used (version consistency).
		return Decision{Version: c.Used}
	}
	if switched {
		return Decision{Version: to}
	}
	switch k {
	case BF:
		return Decision{Hold: true} // no past on the service: wait for the switch
	default: // WF before the switch keeps routing to old
		return Decision{Version: from}
	}
}
