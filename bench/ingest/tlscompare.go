package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/internal/benchtls"
	"github.com/coordinator/coordinator/security/tlsfiles"
)

// tlsCompare measures ingest (the throughput phase of the default mode)
// with the coordinator's listeners in plaintext and with TLS everywhere
// (client certificates required of the simulated sidecars, their identity
// checked against the policy; internal/benchtls), alternating rounds times
// on one etcd child, each on its own key prefix. It prints the best round
// of each:
//
//	tls_off_events_per_s=A tls_on_events_per_s=B tls_cost_pct=C
func tlsCompare(ctx context.Context, rounds, groups, batch, window int, d, flush time.Duration) {
	dir, err := os.MkdirTemp("", "ingest-tls-")
	check(err)
	defer os.RemoveAll(dir)
	endpoint, stopEtcd := startEtcdChild(dir)
	defer stopEtcd()
	tlsDir := filepath.Join(dir, "tls")
	check(os.Mkdir(tlsDir, 0o700))
	files, err := benchtls.Setup(tlsDir)
	check(err)

	rates := map[bool][]float64{}
	for r := range rounds {
		for _, withTLS := range []bool{false, true} {
			cfg := server.Config{
				GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", EtcdEndpoints: []string{endpoint},
				Coordinator: coordinator.Config{FlushInterval: flush, Prefix: fmt.Sprintf("/bench-tls-%d-%v/", r, withTLS)},
			}
			client := tlsfiles.Files{}
			if withTLS {
				check(files.Configure(&cfg))
				client = files.Client
			}
			srv, err := server.Start(ctx, cfg)
			check(err)
			_, err = srv.WaitLeading(ctx)
			check(err)
			creds, err := tlsfiles.DialCredentials(client, "")
			check(err)
			conn, err := grpc.NewClient(srv.GRPCAddr(), grpc.WithTransportCredentials(creds))
			check(err)
			gs := make([]*group, groups)
			for g := range gs {
				gs[g] = newGroup(ctx, func() *grpc.ClientConn { return conn }, g, batch, window)
			}
			runPhase(gs, time.Second) // warm-up
			evs, _, elapsed := runPhase(gs, d)
			var errs int64
			for _, g := range gs {
				errs += g.errors.Load()
				g.close()
			}
			if errs > 0 {
				log.Fatalf("ingest (tls %v): %d events were rejected", withTLS, errs)
			}
			rate := float64(evs) / elapsed.Seconds()
			rates[withTLS] = append(rates[withTLS], rate)
			log.Printf("round %d, tls %v: %d events in %v: %.0f events/s", r+1, withTLS, evs, elapsed.Round(time.Millisecond), rate)
			conn.Close()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			check(srv.Close(cctx))
			cancel()
		}
	}
	off, on := slices.Max(rates[false]), slices.Max(rates[true])
	fmt.Printf("tls_off_events_per_s=%.0f tls_on_events_per_s=%.0f tls_cost_pct=%.1f\n", off, on, 100*(off-on)/off)
}
