package adminauth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"sync"
	"time"
)

// Browser sessions: a token exchanged once (POST /v1/session) for a
// cookie, so that the web view's page holds no token. The table is in this
// replica's memory: a session is good on the replica that issued it, and
// ends with the process.
const (
	// SessionCookie is the session cookie's name.
	SessionCookie = "coordinator_session"
	// DefaultSessionTTL is a session's lifetime (the cookie's Max-Age).
	DefaultSessionTTL = 12 * time.Hour
	// DefaultMaxSessions bounds the table; the oldest session is evicted
	// to make room.
	DefaultMaxSessions = 10000
)

type session struct {
	key     [sha256.Size]byte // sha256 of the cookie value
	name    string
	hash    [sha256.Size]byte // the token's: the session ends when it leaves the file
	token   string            // passed on to the leader by a follower without a replica certificate
	expires time.Time
}

type sessions struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu    sync.Mutex
	byKey map[[sha256.Size]byte]*session
	order [][sha256.Size]byte // creation order (the TTL is fixed: expiry order too)
}

func newSessions(ttl time.Duration, max int) *sessions {
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	if max <= 0 {
		max = DefaultMaxSessions
	}
	return &sessions{ttl: ttl, max: max, now: time.Now, byKey: map[[sha256.Size]byte]*session{}}
}

// create adds a session for token t and returns the cookie value.
func (s *sessions) create(t token, raw string) (string, time.Time, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", time.Time{}, err
	}
	value := base64.RawURLEncoding.EncodeToString(b)
	now := s.now()
	se := &session{key: sha256.Sum256([]byte(value)), name: t.name, hash: t.hash, token: raw, expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep(now)
	for len(s.byKey) >= s.max && len(s.order) > 0 {
		delete(s.byKey, s.order[0])
		s.order = s.order[1:]
	}
	s.byKey[se.key] = se
	s.order = append(s.order, se.key)
	return value, se.expires, nil
}

// sweep drops expired sessions (and keys of deleted ones) from the front.
func (s *sessions) sweep(now time.Time) {
	for len(s.order) > 0 {
		se, ok := s.byKey[s.order[0]]
		if ok && now.Before(se.expires) {
			break
		}
		delete(s.byKey, s.order[0])
		s.order = s.order[1:]
	}
	if len(s.order) > 2*len(s.byKey)+64 { // many logged out: compact
		kept := s.order[:0:0]
		for _, k := range s.order {
			if _, ok := s.byKey[k]; ok {
				kept = append(kept, k)
			}
		}
		s.order = kept
	}
}

// get returns the session of a cookie value, if live.
func (s *sessions) get(value string) (session, bool) {
	k := sha256.Sum256([]byte(value))
	s.mu.Lock()
	defer s.mu.Unlock()
	se, ok := s.byKey[k]
	if !ok {
		return session{}, false
	}
	if !s.now().Before(se.expires) {
		delete(s.byKey, k)
		return session{}, false
	}
	return *se, true
}

func (s *sessions) remove(value string) {
	k := sha256.Sum256([]byte(value))
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byKey, k)
}

func (s *sessions) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byKey)
}
