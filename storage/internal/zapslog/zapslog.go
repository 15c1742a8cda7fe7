// Package zapslog routes the zap logs of etcd's server and client libraries
// into a log/slog handler, so that the coordinator has one log stream.
package zapslog

import (
	"context"
	"log/slog"
	"sort"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a zap logger that writes every entry at or above level to lg.
// A nil lg means slog.Default().
func New(lg *slog.Logger, level zapcore.Level) *zap.Logger {
	if lg == nil {
		lg = slog.Default()
	}
	return zap.New(&core{h: lg.Handler(), level: level})
}

// ParseLevel maps etcd's log level names (debug, info, warn, error, dpanic,
// panic, fatal) to a zap level; an empty or unknown name gives def.
func ParseLevel(s string, def zapcore.Level) zapcore.Level {
	var l zapcore.Level
	if s == "" || l.UnmarshalText([]byte(strings.ToLower(s))) != nil {
		return def
	}
	return l
}

type core struct {
	h     slog.Handler
	level zapcore.Level
}

func (c *core) Enabled(l zapcore.Level) bool {
	return l >= c.level && c.h.Enabled(context.Background(), slogLevel(l))
}

func (c *core) With(fs []zapcore.Field) zapcore.Core {
	if len(fs) == 0 {
		return c
	}
	return &core{h: c.h.WithAttrs(attrs(fs)), level: c.level}
}

func (c *core) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *core) Write(e zapcore.Entry, fs []zapcore.Field) error {
	r := slog.NewRecord(e.Time, slogLevel(e.Level), e.Message, 0)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	if e.Caller.Defined {
		r.AddAttrs(slog.String("caller", e.Caller.TrimmedPath()))
	}
	r.AddAttrs(attrs(fs)...)
	return c.h.Handle(context.Background(), r)
}

func (c *core) Sync() error { return nil }

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func attrs(fs []zapcore.Field) []slog.Attr {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fs {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		out = append(out, slog.Any(k, enc.Fields[k]))
	}
	return out
}
