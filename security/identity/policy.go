package identity

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"
)

// ErrNotAllowed: the identity may not register as that service.
var ErrNotAllowed = errors.New("not allowed")

// Default mappings of a policy.
const (
	// DefaultServiceAccount maps spiffe://DOMAIN/ns/NS/sa/SERVICE to
	// SERVICE, and a CN identity to the service of the same name.
	DefaultServiceAccount = "service-account"
	// DefaultNone allows only what the policy's rules list.
	DefaultNone = "none"
)

// A policy file (YAML or JSON):
//
//	# which services each identity may register as
//	default: service-account   # or none
//	identities:
//	- identity: spiffe://prod.example/ns/shop/sa/batch
//	  services: [reports, exports]
//	- identity: spiffe://prod.example/ns/tools/*   # a trailing * matches a prefix
//	  services: ["*"]                                # any service
//	- identity: billing-legacy                     # a CN
//	  services: [billing]
//
// The rules add to the default mapping; with default: none they are all
// there is.
type policyDoc struct {
	Default    string `json:"default"`
	Identities []rule `json:"identities"`
}

type rule struct {
	Identity string   `json:"identity"`
	Services []string `json:"services"`
}

// Policy says which services an identity may register as. The zero of
// *Policy (nil) is the default mapping. A policy from a file re-reads it
// when it changes (at most once a second, on use); a file that no longer
// parses is logged and the previous policy kept.
type Policy struct {
	path string
	lg   *slog.Logger

	mu      sync.Mutex
	doc     policyDoc
	raw     []byte
	checked time.Time
}

// LoadPolicy reads a policy file; the error says what is wrong with it.
func LoadPolicy(path string, lg *slog.Logger) (*Policy, error) {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	p := &Policy{path: path, lg: lg}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity policy: %w", err)
	}
	doc, err := parsePolicy(raw)
	if err != nil {
		return nil, fmt.Errorf("identity policy %s: %w", path, err)
	}
	p.doc, p.raw, p.checked = doc, raw, time.Now()
	return p, nil
}

func parsePolicy(raw []byte) (policyDoc, error) {
	var doc policyDoc
	if err := yaml.UnmarshalStrict(raw, &doc); err != nil {
		return doc, err
	}
	switch doc.Default {
	case "":
		doc.Default = DefaultServiceAccount
	case DefaultServiceAccount, DefaultNone:
	default:
		return doc, fmt.Errorf("default %q: want %s or %s", doc.Default, DefaultServiceAccount, DefaultNone)
	}
	for i, r := range doc.Identities {
		if r.Identity == "" {
			return doc, fmt.Errorf("identities[%d]: identity is empty", i)
		}
		if i := strings.IndexByte(r.Identity, '*'); i >= 0 && i != len(r.Identity)-1 {
			return doc, fmt.Errorf("identities[%d]: %q: * may only end an identity", i, r.Identity)
		}
		if len(r.Services) == 0 {
			return doc, fmt.Errorf("identities[%d] (%s): no services", i, r.Identity)
		}
	}
	return doc, nil
}

func (p *Policy) current() policyDoc {
	if p == nil {
		return policyDoc{Default: DefaultServiceAccount}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.checked) >= time.Second {
		p.checked = time.Now()
		raw, err := os.ReadFile(p.path)
		switch {
		case err != nil:
			p.lg.Warn("identity policy could not be read; keeping the previous one", "path", p.path, "error", err)
		case !bytes.Equal(raw, p.raw):
			doc, err := parsePolicy(raw)
			if err != nil {
				p.lg.Warn("identity policy does not parse; keeping the previous one", "path", p.path, "error", err)
				p.raw = raw // do not log it again until it changes
				break
			}
			p.doc, p.raw = doc, raw
			p.lg.Info("identity policy reloaded", "path", p.path, "rules", len(doc.Identities), "default", doc.Default)
		}
	}
	return p.doc
}

// MayRegister returns nil if id may register as service, else an
// ErrNotAllowed that says which services it may register as.
func (p *Policy) MayRegister(id ID, service string) error {
	doc := p.current()
	var allowed []string
	if doc.Default == DefaultServiceAccount {
		if s := DefaultService(id); s != "" {
			allowed = append(allowed, s)
		}
	}
	for _, r := range doc.Identities {
		if matches(r.Identity, id.Name) {
			allowed = append(allowed, r.Services...)
		}
	}
	if slices.Contains(allowed, service) || slices.Contains(allowed, "*") {
		return nil
	}
	if len(allowed) == 0 {
		return fmt.Errorf("%w: identity %s may register as no service", ErrNotAllowed, id)
	}
	return fmt.Errorf("%w: identity %s may register as %s, not %q", ErrNotAllowed, id, strings.Join(allowed, ", "), service)
}

// DefaultService is the service the default mapping gives id: SERVICE for
// spiffe://DOMAIN/ns/NS/sa/SERVICE, the CN for a CN identity, else "".
func DefaultService(id ID) string {
	if id.SPIFFE.IsZero() {
		return id.Name
	}
	seg := strings.Split(strings.TrimPrefix(id.SPIFFE.Path(), "/"), "/")
	if len(seg) == 4 && seg[0] == "ns" && seg[2] == "sa" && seg[3] != "" {
		return seg[3]
	}
	return ""
}

func matches(pattern, name string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(name, p)
	}
	return pattern == name
}
