// Package ratelog bounds the log lines of one kind (one level and message)
// a process writes, so that a client that can make a server log cannot make
// it log without bound: each kind has a token bucket, lines past it are
// dropped and counted, and the next line of that kind let through carries
// the count as "suppressed".
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Defaults for New's rate and burst: a burst of 50 lines of one kind, then
// 10 per second.
const (
	DefaultPerSecond = 10
	DefaultBurst     = 50
)

// maxKinds bounds the kinds tracked; log messages are constants in the
// code, so this is only reached if a message is built from input.
const maxKinds = 4096

// Handler is a slog.Handler that rate-limits the records it passes to the
// next handler, per level and message.
type Handler struct {
	next slog.Handler
	st   *state // shared by the handlers WithAttrs and WithGroup derive
}

type kind struct {
	level slog.Level
	msg   string
}

type bucket struct {
	tokens  float64
	last    time.Time
	dropped int
}

type state struct {
	perSecond float64
	burst     float64

	mu      sync.Mutex
	buckets map[kind]*bucket
}

// New returns a handler passing to next at most burst lines of one kind at
// once, refilled at perSecond; zero or negative values take the defaults.
func New(next slog.Handler, perSecond float64, burst int) *Handler {
	if perSecond <= 0 {
		perSecond = DefaultPerSecond
	}
	if burst <= 0 {
		burst = DefaultBurst
	}
	return &Handler{next: next, st: &state{perSecond: perSecond, burst: float64(burst), buckets: make(map[kind]*bucket)}}
}

// Enabled reports whether next handles level at all.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle passes r on if its kind has a token left, with the number of lines
// of its kind dropped since the last one passed; otherwise it drops it.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	now := r.Time
	if now.IsZero() {
		now = time.Now()
	}
	ok, dropped := h.st.take(kind{r.Level, r.Message}, now)
	if !ok {
		return nil
	}
	if dropped > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", dropped))
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs and WithGroup derive handlers that share the buckets.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(attrs), st: h.st}
}

func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), st: h.st}
}

// take spends a token of k's bucket at now, reporting whether there was
// one and, if so, how many lines of k were dropped since the last.
func (s *state) take(k kind, now time.Time) (bool, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[k]
	if b == nil {
		if len(s.buckets) >= maxKinds {
			s.forgetIdle(now)
		}
		b = &bucket{tokens: s.burst, last: now}
		s.buckets[k] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(s.burst, b.tokens+el*s.perSecond)
		b.last = now
	}
	if b.tokens < 1 {
		b.dropped++
		return false, 0
	}
	b.tokens--
	d := b.dropped
	b.dropped = 0
	return true, d
}

// forgetIdle drops the buckets that would be full by now and owe no count:
// starting them anew changes nothing.
func (s *state) forgetIdle(now time.Time) {
	for k, b := range s.buckets {
		if b.dropped == 0 && b.tokens+now.Sub(b.last).Seconds()*s.perSecond >= s.burst {
			delete(s.buckets, k)
		}
	}
}
