package adminauth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"
)

// DefaultCheckInterval is how often, at most, the token and identity files
// are read again (on use: no goroutine).
const DefaultCheckInterval = time.Second

// reloading is the parsed contents of a file, read again at most once per
// interval when used; a file that no longer reads or parses is logged and
// the previous contents kept.
type reloading[T any] struct {
	path  string
	what  string // "token file"
	parse func([]byte) (T, error)
	every time.Duration
	lg    *slog.Logger
	now   func() time.Time

	mu      sync.Mutex
	checked time.Time
	raw     []byte
	cur     T
	badRaw  []byte // the last bad contents logged, so a bad file is logged once
}

func newReloading[T any](path, what string, parse func([]byte) (T, error), every time.Duration, lg *slog.Logger) (*reloading[T], error) {
	r := &reloading[T]{path: path, what: what, parse: parse, every: every, lg: lg, now: time.Now}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("adminauth: %s: %w", what, err)
	}
	if r.cur, err = parse(raw); err != nil {
		return nil, fmt.Errorf("adminauth: %s %s: %w", what, path, err)
	}
	r.raw, r.checked = raw, r.now()
	return r, nil
}

// get returns the current contents, re-reading the file if the last look
// is older than the interval.
func (r *reloading[T]) get() T {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.checked) >= r.every {
		r.checked = now
		r.reload()
	}
	return r.cur
}

func (r *reloading[T]) reload() {
	raw, err := os.ReadFile(r.path)
	if err != nil {
		if !bytes.Equal(r.badRaw, []byte("\x00read")) {
			r.lg.Warn(r.what+" not read again; keeping the previous contents", "path", r.path, "error", err)
			r.badRaw = []byte("\x00read")
		}
		return
	}
	if bytes.Equal(raw, r.raw) {
		r.badRaw = nil
		return
	}
	v, err := r.parse(raw)
	if err != nil {
		if !bytes.Equal(raw, r.badRaw) {
			r.lg.Error(r.what+" is bad; keeping the previous contents", "path", r.path, "error", err)
			r.badRaw = raw
		}
		return
	}
	r.raw, r.cur, r.badRaw = raw, v, nil
	r.lg.Info(r.what+" reloaded", "path", r.path)
}

// TokenFile is the YAML of the token file:
//
//	tokens:
//	- name: alice
//	  role: operator
//	  sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//
// Tokens themselves are never stored, only the hex SHA-256 of each.
type TokenFile struct {
	Tokens []TokenEntry `json:"tokens"`
}

// TokenEntry is one token: who it is (Name, unique), its Role, and the
// hex SHA-256 of the token.
type TokenEntry struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	SHA256 string `json:"sha256"`
}

type token struct {
	name string
	role Role
	hash [sha256.Size]byte
}

type tokenSet []token

func parseTokens(raw []byte) (tokenSet, error) {
	var f TokenFile
	if err := yaml.UnmarshalStrict(raw, &f); err != nil {
		return nil, fmt.Errorf("not YAML of the form tokens: [{name, role, sha256}]: %w", err)
	}
	var out tokenSet
	names := map[string]bool{}
	for i, e := range f.Tokens {
		where := fmt.Sprintf("tokens[%d]", i)
		if e.Name == "" {
			return nil, fmt.Errorf("%s: no name", where)
		}
		where += " (" + e.Name + ")"
		if names[e.Name] {
			return nil, fmt.Errorf("%s: name used twice", where)
		}
		names[e.Name] = true
		role, err := ParseRole(e.Role)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		h, err := hex.DecodeString(strings.TrimSpace(e.SHA256))
		if err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("%s: sha256 %q: want 64 hex digits, the SHA-256 of the token (coordctl token create prints it)", where, e.SHA256)
		}
		t := token{name: e.Name, role: role}
		copy(t.hash[:], h)
		out = append(out, t)
	}
	return out, nil
}

// match finds the token whose hash is sha256(tok), comparing every entry in
// constant time.
func (ts tokenSet) match(tok string) (token, bool) {
	h := sha256.Sum256([]byte(tok))
	var found token
	ok := 0
	for _, t := range ts {
		if subtle.ConstantTimeCompare(h[:], t.hash[:]) == 1 {
			found, ok = t, 1
		}
	}
	return found, ok == 1
}

// HashToken is the hex SHA-256 of a token, as the token file stores it.
func HashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// NewToken returns a new random token: 32 bytes, base64url without padding.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// IdentityFile is the YAML of the identity roles file:
//
//	identities:
//	- identity: spiffe://prod/ns/ops/sa/oncall
//	  role: operator
//	- identity: spiffe://prod/ns/dev/*
//	  role: viewer
//
// An identity ending in * matches every identity it is a prefix of; an
// exact entry wins over a prefix, and a longer prefix over a shorter one.
type IdentityFile struct {
	Identities []IdentityEntry `json:"identities"`
}

// IdentityEntry maps an mTLS identity (a SPIFFE ID or CN), or a prefix of
// identities ending in *, to a role.
type IdentityEntry struct {
	Identity string `json:"identity"`
	Role     string `json:"role"`
}

type identityRoles struct {
	exact    map[string]Role
	prefixes []IdentityEntry // Role parsed into prefixRoles
	roles    []Role
}

func parseIdentities(raw []byte) (*identityRoles, error) {
	var f IdentityFile
	if err := yaml.UnmarshalStrict(raw, &f); err != nil {
		return nil, fmt.Errorf("not YAML of the form identities: [{identity, role}]: %w", err)
	}
	ir := &identityRoles{exact: map[string]Role{}}
	for i, e := range f.Identities {
		where := fmt.Sprintf("identities[%d] (%s)", i, e.Identity)
		if strings.TrimSpace(e.Identity) == "" || e.Identity == "*" {
			return nil, fmt.Errorf("identities[%d]: identity %q: want an identity, or a prefix ending in *", i, e.Identity)
		}
		role, err := ParseRole(e.Role)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if p, ok := strings.CutSuffix(e.Identity, "*"); ok {
			ir.prefixes = append(ir.prefixes, IdentityEntry{Identity: p})
			ir.roles = append(ir.roles, role)
			continue
		}
		if _, dup := ir.exact[e.Identity]; dup {
			return nil, fmt.Errorf("%s: listed twice", where)
		}
		ir.exact[e.Identity] = role
	}
	return ir, nil
}

func (ir *identityRoles) role(id string) Role {
	if ir == nil {
		return NoRole
	}
	if r, ok := ir.exact[id]; ok {
		return r
	}
	best, role := -1, NoRole
	for i, p := range ir.prefixes {
		if strings.HasPrefix(id, p.Identity) && len(p.Identity) > best {
			best, role = len(p.Identity), ir.roles[i]
		}
	}
	return role
}
