package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stderr))
}

// run runs coordsidecar until SIGTERM or SIGINT (or ctx ends) and returns
// the exit status: 2 for a wrong command line, 1 if it could not start or
// stop cleanly.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	cfg, err := parseConfig(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "coordsidecar: %v\n", err)
		return 2
	}
	applyRuntime(cfg)
	level, _ := parseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	lg := slog.New(slog.NewTextHandler(stderr, opts))
	if cfg.LogFormat == "json" {
		lg = slog.New(slog.NewJSONHandler(stderr, opts))
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	p, err := start(ctx, cfg, lg)
	if err != nil {
		lg.Error("coordsidecar could not start", "err", err)
		return 1
	}
	<-ctx.Done()
	stop() // a second signal kills at once
	lg.Info("shutting down", "grace", cfg.Grace)
	if err := p.shutdown(context.Background()); err != nil {
		lg.Error("unclean shutdown", "err", err)
		return 1
	}
	lg.Info("stopped")
	return 0
}

// applyRuntime sets the process's Go runtime as cfg asks (--procs,
// --gc-percent). Only the process does it, not start: tests run proxies
// inside the test binary.
func applyRuntime(cfg config) {
	if cfg.Procs > 0 {
		runtime.GOMAXPROCS(cfg.Procs)
	}
	debug.SetGCPercent(cfg.GCPercent)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}
