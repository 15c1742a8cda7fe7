package benchproc

import (
	"context"
	"fmt"
	"log"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/coordinator/coordinator/coordinator/server"
)

// Serve is a child's "-serve" mode: a coordinator as coordinatord runs one
// (its garbage-collector target and headroom), on cfg, until SIGTERM. Once
// it leads, it prints the line line gives (default: its gRPC address), which
// Start returns to the parent as Proc.Line.
func Serve(cfg server.Config, line func(*server.Server) string) {
	debug.SetGCPercent(server.GCPercent())
	defer server.StartGCHeadroom(server.DefaultGCHeadroom)()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := server.Start(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := srv.WaitLeading(ctx); err != nil {
		log.Fatal(err)
	}
	if line == nil {
		line = (*server.Server).GRPCAddr
	}
	fmt.Println(line(srv))
	<-ctx.Done()
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Close(cctx); err != nil {
		log.Printf("coordinator close: %v", err)
	}
}
