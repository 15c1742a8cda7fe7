// Command coordinatord runs a coordinator replica: with no flags it starts an
// embedded single-member etcd in ./coordinatord.data and serves sidecars and
// operators on 127.0.0.1:7400 (gRPC) and 127.0.0.1:7401 (REST, /health,
// /metrics, /openapi.json), in plaintext on loopback. Beyond loopback it
// serves TLS (--tls-cert, --tls-key; --client-ca to require sidecars'
// client certificates) or refuses to start unless --insecure;
// --health-addr adds a plaintext listener for probes. Three coordinatord
// given the same --initial-cluster, each with its own --name, --peer-addr
// and --data-dir, form a three-member embedded etcd cluster instead (with
// --peer-cert, --peer-key and --peer-ca, over mutual TLS: https:// peer
// URLs, and client listeners that require client certificates);
// --etcd-endpoints uses an external etcd (--etcd-cacert, --etcd-cert,
// --etcd-key and --etcd-username with a password for a secured one). A
// single member opens no etcd client listener unless --etcd-client-addr is
// given.
//
// Flags are GNU style (--name value or --name=value); every flag can also be
// set by an environment variable, COORDINATORD_ and the flag's name in upper
// case with - as _ (--max-live-txns: COORDINATORD_MAX_LIVE_TXNS); a flag on
// the command line wins. --version prints the build's version and commit.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/coordinator/coordinator/coordinator"
	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/internal/buildinfo"
	"github.com/coordinator/coordinator/storage"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs coordinatord with args (without the program name) and returns
// its exit status: 0, 1 when it failed while running, 2 for a bad command
// line or environment variable.
func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("coordinatord", pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported in one line below, not with the usage
	fs.Usage = func() {}
	showVersion := fs.Bool("version", false, "print the version and the commit of this build, and exit")
	var (
		dataDir       = fs.String("data-dir", server.DefaultDataDir, "directory of the embedded etcd's data")
		grpcAddr      = fs.String("grpc-addr", server.DefaultGRPCAddr, "gRPC listen address (sidecar stream and admin API)")
		httpAddr      = fs.String("http-addr", server.DefaultHTTPAddr, "HTTP listen address (REST API, /health, /metrics)")
		endpoints     = fs.String("etcd-endpoints", "", "comma-separated endpoints of an external etcd cluster (default: embedded etcd)")
		prefix        = fs.String("prefix", storage.DefaultPrefix, "etcd key prefix of all coordinator state")
		flush         = fs.Duration("flush-interval", coordinator.DefaultFlushInterval, "write-behind period of transaction records")
		heartbeat     = fs.Duration("default-heartbeat", coordinator.DefaultHeartbeatInterval, "heartbeat interval for sidecars that do not set one")
		misses        = fs.Uint("default-misses", coordinator.DefaultAllowedMisses, "missed heartbeats allowed for sidecars that do not set it")
		maxTxns       = fs.Int("max-live-txns", coordinator.DefaultMaxLiveTxns, "live transactions in all: a BEGIN (or CALL) that would start one more is refused; /health reports over capacity at 90%")
		logLevel      = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat     = fs.String("log-format", "text", "text or json")
		shutdownGrace = fs.Duration("shutdown-timeout", 30*time.Second, "how long a clean shutdown may take")
		leaderTTL     = fs.Duration("leader-ttl", server.DefaultLeaderTTL, "TTL of the leader's election lease: how long a dead leader keeps the others waiting (whole seconds, at least 2s)")
		minSession    = fs.Duration("min-session-ttl", coordinator.DefaultMinSessionTTL, "shortest sidecar session lease, whatever the sidecar's heartbeat: keep it above the leader failover time")
		maxBody       = fs.Int64("max-request-bytes", server.DefaultMaxRequestBytes, "largest REST request body; a larger one gets 413")
		maxStreams    = fs.Int("max-streams", server.DefaultMaxStreams, "sidecar streams open at once, in all; one more is refused")
		maxPerPeer    = fs.Int("max-streams-per-peer", server.DefaultMaxStreamsPerPeer, "sidecar streams open at once from one peer address")
		maxWatchers   = fs.Int("max-state-watchers", server.DefaultMaxStateWatchers, "WatchState streams (GET /v1/state:watch, the web view's) open at once on this replica; one more is refused")
		watchDuration = fs.Duration("state-watch-duration", server.DefaultStateWatchDuration, "longest a WatchState stream lasts before it ends and the client reconnects")
		beginWait     = fs.Duration("begin-wait-timeout", coordinator.DefaultBeginWaitTimeout, "how long a call during an update may wait for its transaction's BEGIN to arrive from another sidecar; then it goes where a transaction not seen begin goes")
		prepTimeout   = fs.Duration("prepare-timeout", coordinator.DefaultPrepareTimeout, "abort an update still PREPARING after this long, naming the sessions that did not acknowledge update mode (an update's prepare_timeout overrides it)")
		maxLanes      = fs.Int("max-lanes", coordinator.DefaultMaxLanes, "the most lanes (coordctl lane create) the coordinator keeps; one more is refused")
		updTimeout    = fs.Duration("update-timeout", coordinator.DefaultUpdateTimeout, "abort a wf or bf update whose service is not free within this long, when the update sets no timeout")
		regTimeout    = fs.Duration("register-timeout", coordinator.DefaultRegisterTimeout, "how long a new sidecar stream may take to send its Register")
		gcPercent     = fs.Int("gc-percent", server.GCPercent(), "garbage collector target (GOGC; default from GOGC when set): higher collects less often, for a larger heap; -1 is off (with GOMEMLIMIT)")
		gcHeadroom    = fs.Int("gc-headroom-mb", server.DefaultGCHeadroom>>20, "collect sooner than --gc-percent says once the heap is this many MiB past the live heap (a soft memory limit that follows the live heap, never above GOMEMLIMIT); 0 is off")
	)
	cluster := registerClusterFlags(fs) // --name, --initial-cluster[-state], --peer-addr, --etcd-client-addr, etcd TLS and auth
	selfPreservation := registerSelfPreservationFlags(fs)
	forget := registerForgetFlags(fs)
	quotas := registerQuotaFlags(fs)
	identities := registerIdentityFlags(fs)
	adminAuth := registerAdminAuthFlags(fs)
	tlsf := registerTLSFlags(fs) // --tls-cert, --tls-key, --client-ca, --tls-identity-from, --trust-domain, --health-addr, --insecure
	cl, err := parseCommandLine(fs, args, os.LookupEnv)
	switch {
	case err == pflag.ErrHelp:
		printUsage(stdout, fs)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "coordinatord: %v\n", err)
		fmt.Fprintln(stderr, "Run 'coordinatord --help' for usage.")
		return 2
	case *showVersion:
		fmt.Fprintf(stdout, "coordinatord %s\n", buildinfo.Read())
		return 0
	}
	// fail reports a bad setting: its flag, and the variable that set it
	// if one did.
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "coordinatord: %s\n", cl.explain(fmt.Sprintf(format, a...)))
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fail("--log-level: %v", err)
	}
	var h slog.Handler
	switch *logFormat {
	case "text":
		h = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	case "json":
		h = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	default:
		return fail("--log-format must be text or json, not %q", *logFormat)
	}
	lg := slog.New(h)
	var eps []string
	for _, e := range strings.Split(*endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	if *gcHeadroom < 0 {
		fmt.Fprintf(stderr, "coordinatord: --gc-headroom-mb %d: want 0 (off) or a positive number of MiB\n", *gcHeadroom)
		return 2
	}
	if gcFlagSet(fs) { // from GOGC, the runtime's own reading stands
		if err := validateGCPercent(*gcPercent); err != nil {
			return fail("%v", err)
		}
	}
	if err := cluster.validate(eps); err != nil {
		return fail("%v", err)
	}
	if err := tlsf.validate(*grpcAddr, *httpAddr); err != nil {
		return fail("%v", err)
	}
	if flag, addr := cluster.plaintextBeyondLoopback(); flag != "" && !*tlsf.insecure {
		fix := "--peer-cert, --peer-key and --peer-ca (and https:// in --initial-cluster)"
		if strings.HasPrefix(flag, "--etcd-client-") {
			fix = "--etcd-client-cert, --etcd-client-key and --etcd-client-ca"
		}
		return fail("%s %s: the embedded etcd would listen beyond loopback without TLS, and whoever reaches it could read and change every key: "+
			"give %s, or --insecure on a network that protects it", flag, addr, fix)
	}
	if *leaderTTL < 2*time.Second || *leaderTTL%time.Second != 0 {
		return fail("--leader-ttl %v: want whole seconds, at least 2s", *leaderTTL)
	}
	if *maxStreams <= 0 || *maxPerPeer <= 0 || *regTimeout <= 0 || *beginWait <= 0 {
		return fail("--max-streams, --max-streams-per-peer, --register-timeout and --begin-wait-timeout must be positive")
	}
	if *maxWatchers <= 0 || *watchDuration <= 0 {
		return fail("--max-state-watchers and --state-watch-duration must be positive")
	}
	if *maxBody <= 0 {
		return fail("--max-request-bytes %d: want a positive size", *maxBody)
	}
	if *minSession < *leaderTTL {
		return fail("--min-session-ttl %v is shorter than --leader-ttl %v: sidecars would expire during every failover", *minSession, *leaderTTL)
	}
	if err := selfPreservation.validate(); err != nil {
		return fail("%v", err)
	}
	if err := forget.validate(); err != nil {
		return fail("%v", err)
	}
	if err := quotas.validate(); err != nil {
		return fail("%v", err)
	}
	if err := adminAuth.validate(*tlsf.clientCA != ""); err != nil {
		return fail("%v", err)
	}
	if *updTimeout <= 0 {
		return fail("--update-timeout %v: want a positive duration", *updTimeout)
	}
	if *maxLanes <= 0 {
		return fail("--max-lanes %d: want a positive number", *maxLanes)
	}
	if *prepTimeout <= 0 {
		return fail("--prepare-timeout %v: want a positive duration", *prepTimeout)
	}
	if *maxTxns <= 0 {
		return fail("--max-live-txns %d: want a positive number", *maxTxns)
	}
	var ccfg coordinator.Config
	if err := identities.apply(&ccfg, lg); err != nil {
		return fail("%v", err)
	}
	setGCPercent(*gcPercent)
	if *gcHeadroom > 0 {
		defer server.StartGCHeadroom(uint64(*gcHeadroom) << 20)()
	}
	lg.Info("garbage collector", "gc_percent", *gcPercent, "gc_headroom_mb", *gcHeadroom)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	cfg := server.Config{
		GRPCAddr:           *grpcAddr,
		HTTPAddr:           *httpAddr,
		DataDir:            *dataDir,
		EtcdEndpoints:      eps,
		Logger:             lg,
		LeaderTTL:          *leaderTTL,
		MaxRequestBytes:    *maxBody,
		MaxStreams:         *maxStreams,
		MaxStreamsPerPeer:  *maxPerPeer,
		MaxStateWatchers:   *maxWatchers,
		StateWatchDuration: *watchDuration,
		Coordinator: coordinator.Config{
			Prefix:           *prefix,
			FlushInterval:    *flush,
			DefaultHeartbeat: *heartbeat,
			DefaultMisses:    uint32(*misses),
			MaxLiveTxns:      *maxTxns,
			MinSessionTTL:    *minSession,
			RegisterTimeout:  *regTimeout,
			BeginWaitTimeout: *beginWait,
			PrepareTimeout:   *prepTimeout,
			UpdateTimeout:    *updTimeout,
			MaxLanes:         *maxLanes,
			IdentityPolicy:   ccfg.IdentityPolicy,
		},
	}
	cluster.apply(&cfg)
	selfPreservation.apply(&cfg.Coordinator)
	forget.apply(&cfg.Coordinator)
	quotas.apply(&cfg.Coordinator)
	tlsf.apply(&cfg)
	adminAuth.apply(&cfg)
	srv, err := server.Start(startCtx, cfg)
	cancel()
	if err != nil {
		lg.Error("start failed", "error", err)
		return 1
	}
	code := 0
	select {
	case <-ctx.Done():
		lg.Info("signal received, shutting down")
	case err := <-srv.Done():
		lg.Error("listener stopped", "error", err)
		code = 1
	}
	sctx, scancel := context.WithTimeout(context.Background(), *shutdownGrace)
	defer scancel()
	if err := srv.Close(sctx); err != nil {
		lg.Error("shutdown", "error", err)
		code = 1
	}
	return code
}
