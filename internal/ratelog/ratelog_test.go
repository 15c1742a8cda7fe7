package ratelog

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// logAt logs msg with the record time at.
func logAt(h slog.Handler, at time.Time, level slog.Level, msg string) {
	_ = h.Handle(context.Background(), slog.NewRecord(at, level, msg, 0))
}

func TestBurstThenRateThenSuppressedCount(t *testing.T) {
	var buf bytes.Buffer
	h := New(slog.NewTextHandler(&buf, nil), 2, 3)
	t0 := time.Unix(1000, 0)
	for range 10 {
		logAt(h, t0, slog.LevelWarn, "flood")
	}
	if n := strings.Count(buf.String(), "msg=flood"); n != 3 {
		t.Fatalf("%d lines of a burst of 10 passed, want 3:\n%s", n, buf.String())
	}
	logAt(h, t0, slog.LevelWarn, "other")                  // another kind has its own bucket
	logAt(h, t0, slog.LevelInfo, "flood")                  // another level too
	logAt(h, t0.Add(time.Second), slog.LevelWarn, "flood") // 2 tokens back
	out := buf.String()
	if !strings.Contains(out, "msg=other") || strings.Count(out, "level=INFO msg=flood") != 1 {
		t.Fatalf("another message or level was limited:\n%s", out)
	}
	if !strings.Contains(out, "level=WARN msg=flood suppressed=7") {
		t.Fatalf("the line after the drops does not say 7 were suppressed:\n%s", out)
	}
	logAt(h, t0.Add(time.Second), slog.LevelWarn, "flood")
	logAt(h, t0.Add(time.Second), slog.LevelWarn, "flood")
	if n := strings.Count(buf.String(), "level=WARN msg=flood"); n != 5 {
		t.Fatalf("%d WARN lines after a second at 2/s, want 5:\n%s", n, buf.String())
	}
}

func TestDerivedHandlersShareTheBudget(t *testing.T) {
	var buf bytes.Buffer
	h := New(slog.NewTextHandler(&buf, nil), 1, 2)
	lg := slog.New(h)
	a, b := lg.With("conn", 1), lg.WithGroup("g").With("conn", 2)
	for range 5 {
		a.Warn("flood")
		b.Warn("flood")
	}
	if n := strings.Count(buf.String(), "msg=flood"); n != 2 {
		t.Fatalf("%d lines passed through derived loggers, want 2 in all:\n%s", n, buf.String())
	}
}

func TestKindsBounded(t *testing.T) {
	h := New(slog.DiscardHandler, 1, 1)
	t0 := time.Unix(1000, 0)
	for i := range 3 * maxKinds {
		logAt(h, t0.Add(time.Duration(i)*time.Second), slog.LevelInfo, strings.Repeat("x", i%(2*maxKinds)+1))
	}
	if n := len(h.st.buckets); n > maxKinds {
		t.Fatalf("%d kinds tracked, want at most %d", n, maxKinds)
	}
}
