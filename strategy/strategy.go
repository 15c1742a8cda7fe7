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

// Parse reads a strategy's name in the forms people type: "cv", "CV" or
// the protocol's "STRATEGY_CV" (any case).
func Parse(s string) (Kind, error) {
	switch strings.TrimPrefix(strings.ToLower(s), "strategy_") {
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
