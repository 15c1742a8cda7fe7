package zapslog

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestBridge(t *testing.T) {
	var buf bytes.Buffer
	lg := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), zapcore.WarnLevel)
	lg.Info("dropped below the level")
	lg.With(zap.String("member", "m1")).Warn("kept", zap.Int("n", 3), zap.Error(errors.New("boom")))
	out := buf.String()
	if strings.Contains(out, "dropped") {
		t.Fatalf("info logged at warn level: %s", out)
	}
	for _, want := range []string{"level=WARN", "msg=kept", "member=m1", "n=3", "error=boom"} {
		if !strings.Contains(out, want) {
			t.Fatalf("output %q lacks %q", out, want)
		}
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]zapcore.Level{
		"": zapcore.ErrorLevel, "bogus": zapcore.ErrorLevel, "debug": zapcore.DebugLevel, "WARN": zapcore.WarnLevel, "info": zapcore.InfoLevel,
	} {
		if got := ParseLevel(in, zapcore.ErrorLevel); got != want {
			t.Errorf("ParseLevel(%q) = %v, want %v", in, got, want)
		}
	}
}
