package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// renice lowers the priority of every thread of this process (the
// simulated sidecars) to nice n; threads the runtime starts later inherit
// it. The coordinator's child, started before, keeps its own: on a shared
// machine the sidecars, which in a real mesh run elsewhere, should not
// take the coordinator's CPU.
func renice(n int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, n); err != nil {
			return fmt.Errorf("setpriority %d: %w", tid, err)
		}
	}
	return nil
}

// sdkLog counts the SDK clients' warnings and errors by message and error,
// so the bench can say why streams ended (reconnects, rejected events)
// without logging each of thousands.
type sdkLog struct {
	mu     sync.Mutex
	counts map[string]int
}

func newSDKLog() *sdkLog { return &sdkLog{counts: map[string]int{}} }

func (l *sdkLog) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelWarn }
func (l *sdkLog) WithAttrs([]slog.Attr) slog.Handler            { return l }
func (l *sdkLog) WithGroup(string) slog.Handler                 { return l }

func (l *sdkLog) Handle(_ context.Context, r slog.Record) error {
	key := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" {
			e := a.Value.String()
			if len(e) > 120 {
				e = e[:120] + "..."
			}
			key += ": " + e
		}
		return true
	})
	l.mu.Lock()
	l.counts[key]++
	l.mu.Unlock()
	return nil
}

// summary returns the counts since the last summary, most frequent first,
// and resets them.
func (l *sdkLog) summary() string {
	l.mu.Lock()
	c := l.counts
	l.counts = map[string]int{}
	l.mu.Unlock()
	if len(c) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return c[b] - c[a] })
	var b strings.Builder
	for i, k := range keys {
		if i == 8 {
			fmt.Fprintf(&b, "; and %d other kinds", len(keys)-8)
			break
		}
		fmt.Fprintf(&b, "; %d× %s", c[k], k)
	}
	return strings.TrimPrefix(b.String(), "; ")
}
