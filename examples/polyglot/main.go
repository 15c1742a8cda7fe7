// Command polyglot runs the seed scenario of examples/authdemo with no SDK
// linked into any service: Portal in Python (standard library only), Proc
// in Node.js (standard http), Auth v1 and v2 in Java (the JDK's HttpServer,
// run as `java Auth.java v1`), DB in Python, each behind its own coordsidecar
// process. Auth's versions reject each other's tokens, as in authdemo.
//
// It starts a coordinator on a temporary embedded etcd (unless
// --coordinator names one), builds coordsidecar (unless --coordsidecar
// names a binary), starts every application and its sidecar, waits until
// all have registered, puts Portal under load, updates Auth (auth-service)
// to its other version with --strategy after --update-after, and, once the
// load has ended, counts the failed requests and the violations: the
// transactions that ran on two versions of a service, by a checker that
// reads only what the applications recorded (one line per request: the
// transaction named in the mesh header, their service and version). Its
// last line is
//
//	strategy=S requests=N failed=F violations=V update_ms=U p99_ms=P
//
// Each application copies the mesh headers (x-coordinator-txn,
// x-coordinator-sub) from the inbound request to the calls it makes for
// it, as Istio asks of tracing headers: see apps/portal.py and apps/proc.js.
//
// It needs python3, node and java (11 or later, a JDK) on PATH, and the go
// command when it builds coordsidecar (run it from the repository). Every
// child runs in a process group of its own and is stopped, then killed, on
// exit, Ctrl-C included.
package main

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/internal/demoload"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/strategy"
)

//go:embed apps
var appsFS embed.FS

// authService is the service name Auth registers under, as in authdemo.
const authService = "auth-service"

// rootService is where every transaction begins (the entry point).
const rootService = "portal"

// runtimes are the programs the applications need, with what to install.
var runtimes = []struct{ cmd, install string }{
	{"python3", "Python 3 (Debian: apt-get install python3)"},
	{"node", "Node.js (Debian: apt-get install nodejs)"},
	{"java", "a JDK 11 or later (Debian: apt-get install default-jdk-headless)"},
}

// missingRuntimes says which of python3, node and java are not on PATH,
// each with what to install ("" if none is missing).
func missingRuntimes() string {
	var miss []string
	for _, r := range runtimes {
		if _, err := exec.LookPath(r.cmd); err != nil {
			miss = append(miss, r.cmd+": install "+r.install)
		}
	}
	return strings.Join(miss, "; ")
}

func main() {
	log.SetFlags(0)
	log.SetPrefix("polyglot: ")
	os.Exit(run(os.Args[1:], os.Stdout))
}

type options struct {
	strategy             string
	coordinator          string
	sidecarBin, logsDir  string
	workers              int
	duration, updateAt   time.Duration
	timeout, readyWithin time.Duration
}

func run(args []string, stdout io.Writer) int {
	var o options
	fs := flag.NewFlagSet("polyglot", flag.ContinueOnError)
	fs.StringVar(&o.strategy, "strategy", "cv", "naive, wf, bf or cv")
	fs.StringVar(&o.coordinator, "coordinator", "", "gRPC address of a running coordinator (plaintext), such as 127.0.0.1:7400 (default: start one on an embedded etcd)")
	fs.StringVar(&o.sidecarBin, "coordsidecar", "", "coordsidecar binary to run (default: go build ./cmd/coordsidecar into a temporary directory)")
	fs.StringVar(&o.logsDir, "logs", "", "keep every process's log and the services' records in this directory (default: a temporary one, removed)")
	fs.IntVar(&o.workers, "concurrency", 16, "concurrent clients")
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "length of the load")
	fs.DurationVar(&o.updateAt, "update-after", time.Second, "when to start the update, from the start of the load")
	fs.DurationVar(&o.timeout, "timeout", 0, "abort the update when it has not switched within this time (0: for wf until the load ends, none for bf and cv)")
	fs.DurationVar(&o.readyWithin, "ready-within", 90*time.Second, "how long an application may take to start")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	kind, err := strategy.Parse(o.strategy)
	if err != nil {
		log.Print(err)
		return 2
	}
	if fs.NArg() > 0 {
		log.Printf("unexpected argument %q", fs.Arg(0))
		return 2
	}
	if miss := missingRuntimes(); miss != "" {
		log.Printf("missing %s", miss)
		return 1
	}
	// SIGINT and SIGTERM end the demo: its children are stopped on the way
	// out; a second signal kills the demo at once (and Linux its children).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	if err := demo(ctx, o, kind, stdout); err != nil {
		if ctx.Err() != nil {
			log.Print("interrupted: every process it started is stopped")
		} else {
			log.Print(err)
		}
		return 1
	}
	return 0
}

// spec is one instance of the scenario.
type spec struct {
	service, version, lang string
	argv                   []string // run in the apps directory
	deps                   []string
	entry                  bool
}

var specs = []spec{
	{service: authService, version: "v1", lang: "Java", argv: javaArgv("Auth.java", "v1")},
	{service: authService, version: "v2", lang: "Java", argv: javaArgv("Auth.java", "v2")},
	{service: "db", version: "v1", lang: "Python", argv: []string{"python3", "db.py"}},
	{service: "proc", version: "v1", lang: "Node.js", argv: []string{"node", "proc.js"}, deps: []string{authService, "db"}},
	{service: rootService, version: "v1", lang: "Python", argv: []string{"python3", "portal.py"}, deps: []string{authService, "proc"}, entry: true},
}

// javaArgv runs a single-file Java program from source, with a JVM sized
// for a small service that should start fast.
func javaArgv(file string, args ...string) []string {
	// The JDK's HttpServer writes a response's headers and body apart: with
	// Nagle's algorithm on, each answer waits for a delayed ACK.
	return append([]string{"java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Dsun.net.httpserver.nodelay=true", file}, args...)
}

// depEnv is the environment variable that gives an application the
// address of its sidecar's listener for dep: AUTH_ADDR, PROC_ADDR, DB_ADDR.
func depEnv(dep string) string {
	return strings.ToUpper(strings.TrimSuffix(dep, "-service")) + "_ADDR"
}

// instance is a running application and its coordsidecar.
type instance struct {
	spec
	id               string
	app, sidecar     *proc
	appAddr, inbound string
	record           string
}

// env says where things are for a run.
type env struct {
	dir, appsDir, sidecarBin, coordinator, suffix string
	readyWithin                                   time.Duration
}

func demo(ctx context.Context, o options, kind strategy.Kind, stdout io.Writer) (err error) {
	dir := o.logsDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "polyglot-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	appsDir := filepath.Join(dir, "apps")
	if err := writeApps(appsDir); err != nil {
		return err
	}
	bin := o.sidecarBin
	if bin == "" {
		if bin, err = buildSidecar(ctx, dir); err != nil {
			return err
		}
	}

	grpcAddr := o.coordinator
	if grpcAddr == "" {
		data, err := os.MkdirTemp("", "polyglot-etcd-") // fresh, even with --logs
		if err != nil {
			return err
		}
		defer os.RemoveAll(data)
		srv, err := server.Start(ctx, server.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: data})
		if err != nil {
			return err
		}
		defer srv.Close(context.Background())
		if _, err := srv.WaitLeading(ctx); err != nil {
			return err
		}
		grpcAddr = srv.GRPCAddr()
		fmt.Fprintf(stdout, "Coordinator: %s (gRPC), http://%s/ (REST, web view /ui/)\n", grpcAddr, srv.HTTPAddr())
	} else {
		fmt.Fprintf(stdout, "Coordinator: %s (gRPC)\n", grpcAddr)
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("coordinator %s: %w", grpcAddr, err)
	}
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)

	// Instance ids unique to this run, as in authdemo.
	suffix := make([]byte, 2)
	_, _ = rand.Read(suffix)
	e := env{dir: dir, appsDir: appsDir, sidecarBin: bin, coordinator: grpcAddr, suffix: hex.EncodeToString(suffix), readyWithin: o.readyWithin}
	insts, err := startAll(ctx, e)
	defer stopAll(insts)
	if err != nil {
		return err
	}
	var portal *instance
	for _, in := range insts {
		if in.service == rootService {
			portal = in
		}
	}
	state, err := admin.GetService(ctx, &pb.GetServiceRequest{Service: authService, InstanceLimit: 1, TxnLimit: 1})
	if err != nil {
		return fmt.Errorf("coordinator %s: get %s: %w", grpcAddr, authService, err)
	}
	printInstances(stdout, insts)
	to := "v2"
	if state.GetDefaultVersion() == "v2" {
		to = "v1"
		log.Printf("%s already runs v2 by default (an earlier run or an operator's update): this run updates it back to v1", authService)
	}
	if u := state.GetUpdate(); u != nil {
		return fmt.Errorf("%s is being updated already (update %s to %s): nothing for the demo to do", authService, u.GetId(), u.GetToVersion())
	}
	fmt.Fprintf(stdout, "Load: %d clients on http://%s/ (portal's sidecar) for %s; %s runs %s by default, updated to %s with %s after %s.\n",
		o.workers, portal.inbound, o.duration, authService, state.GetDefaultVersion(), to, strategy.Name(kind), o.updateAt)

	var l demoload.Load
	l.Start(ctx, "http://"+portal.inbound+"/", o.workers, time.Now().Add(o.duration))
	defer l.Wait()
	select {
	case <-time.After(o.updateAt):
	case <-ctx.Done():
		return ctx.Err()
	}
	wfTimeout := o.timeout
	if wfTimeout == 0 && kind == strategy.WF {
		wfTimeout = o.duration - o.updateAt
	}
	updateStart := time.Now()
	req := &pb.StartUpdateRequest{Service: authService, ToVersion: to, Strategy: kind}
	if wfTimeout > 0 {
		req.Timeout = durationpb.New(wfTimeout)
	}
	u, err := admin.StartUpdate(ctx, req)
	if err != nil {
		return fmt.Errorf("start update of %s to %s: %w", authService, to, err)
	}
	u, err = demoload.WaitUpdate(ctx, admin, u.GetId(), time.Now().Add(o.duration+30*time.Second))
	updateMS := time.Since(updateStart).Milliseconds()
	if err != nil {
		return err
	}
	reason := ""
	if u.GetReason() != "" {
		reason = " (" + u.GetReason() + ")"
	}
	log.Printf("update %s of %s to %s (%s): %s%s after %d ms", u.GetId(), authService, to, strategy.Name(kind),
		strings.TrimPrefix(u.GetPhase().String(), "PHASE_"), reason, updateMS)
	l.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if e := l.FirstErr.Load(); e != nil {
		log.Printf("first failure: %s", e)
	}

	// Every request has been answered, so every record written: check.
	c := newChecker()
	for _, in := range insts {
		if err := c.readFile(in.record); err != nil {
			return err
		}
	}
	log.Printf("records: %s served v1=%d v2=%d; %d transactions", authService,
		c.served[authService]["v1"], c.served[authService]["v2"], len(c.seen))
	if n := c.orphans(rootService); n > 0 {
		return fmt.Errorf("%d transactions were served without passing through %s: an application did not copy the mesh headers to its calls", n, rootService)
	}
	if c.noTxn > 0 {
		return fmt.Errorf("%d requests reached an application without x-coordinator-txn", c.noTxn)
	}
	fmt.Fprintf(stdout, "strategy=%s requests=%d failed=%d violations=%d update_ms=%d p99_ms=%.1f\n",
		strategy.Name(kind), l.Requests.Load(), l.Failed.Load(), c.violations(), updateMS, demoload.MS(l.Lat.Quantile(0.99)))
	return nil
}

// writeApps writes the applications' sources into dir.
func writeApps(dir string) error {
	if err := os.RemoveAll(dir); err != nil { // an earlier run's, with --logs
		return err
	}
	sub, err := fs.Sub(appsFS, "apps")
	if err != nil {
		return err
	}
	return os.CopyFS(dir, sub)
}

// buildSidecar builds coordsidecar into dir with the go command, from the
// module the demo runs in.
func buildSidecar(ctx context.Context, dir string) (string, error) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("the go command is not on PATH to build coordsidecar: give --coordsidecar")
	}
	bin := filepath.Join(dir, "coordsidecar")
	cmd := exec.CommandContext(ctx, goCmd, "build", "-o", bin, "github.com/coordinator/coordinator/cmd/coordsidecar")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build coordsidecar (run the demo from the repository, or give --coordsidecar): %v\n%s", err, out)
	}
	return bin, nil
}

// startAll starts every instance, applications in parallel (the JVMs take
// a while), each sidecar as soon as its application listens; Auth v2's
// registers only after Auth v1's, so that v1 is the default version. It
// returns once every sidecar has registered, with what it started.
func startAll(ctx context.Context, e env) ([]*instance, error) {
	insts := make([]*instance, len(specs))
	errs := make([]error, len(specs))
	v1Registered := make(chan struct{})
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Go(func() {
			var after <-chan struct{}
			if s.service == authService && s.version == "v2" {
				after = v1Registered
			}
			insts[i], errs[i] = startInstance(ctx, e, s, after)
			if s.service == authService && s.version == "v1" {
				close(v1Registered) // a failure ends the demo anyway
			}
		})
	}
	wg.Wait()
	var started []*instance
	for _, in := range insts {
		if in != nil {
			started = append(started, in)
		}
	}
	for _, err := range errs {
		if err != nil {
			return started, err
		}
	}
	return started, nil
}

// startInstance starts the application, then its coordsidecar, retrying
// with other ports when one picked for a dependency listener was taken.
func startInstance(ctx context.Context, e env, s spec, after <-chan struct{}) (*instance, error) {
	name := s.service + "-" + s.version
	for attempt := 1; ; attempt++ {
		in, err := tryInstance(ctx, e, s, after, fmt.Sprintf("%s-%d", name, attempt))
		if err == nil || !errors.Is(err, errAddrInUse) || attempt == 3 {
			return in, err
		}
		log.Printf("%s: %v; again with other ports", name, err)
		stopInstance(in)
	}
}

func tryInstance(ctx context.Context, e env, s spec, after <-chan struct{}, logName string) (*instance, error) {
	in := &instance{spec: s, id: s.service + "-" + s.version + "-" + e.suffix,
		record: filepath.Join(e.dir, s.service+"-"+s.version+".records")}
	if err := os.Remove(in.record); err != nil && !errors.Is(err, fs.ErrNotExist) { // an earlier run's, with --logs
		return nil, err
	}
	depAddrs, err := freePorts(len(s.deps))
	if err != nil {
		return nil, err
	}
	appEnv := []string{"PORT=0", "VERSION=" + s.version, "RECORD_FILE=" + in.record}
	sidecarArgs := []string{e.sidecarBin, "--coordinator", e.coordinator, "--service", s.service, "--version", s.version,
		"--instance-id", in.id, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--grace", "5s", "--log-format", "json"}
	for i, d := range s.deps {
		appEnv = append(appEnv, depEnv(d)+"="+depAddrs[i])
		sidecarArgs = append(sidecarArgs, "--dep", d+"="+depAddrs[i])
	}
	if s.entry {
		sidecarArgs = append(sidecarArgs, "--entry-point")
	}

	in.app, err = startProc(s.service+"@"+s.version+" ("+s.lang+")", e.appsDir, filepath.Join(e.dir, logName+".app.log"), appEnv,
		func(line string) bool { return strings.HasPrefix(line, "listening ") }, s.argv...)
	if err != nil {
		return nil, err
	}
	line, err := in.app.await(ctx, e.readyWithin)
	if err != nil {
		return in, err
	}
	in.appAddr = "127.0.0.1:" + strings.TrimSpace(strings.TrimPrefix(line, "listening "))
	if after != nil {
		select {
		case <-after:
		case <-ctx.Done():
			return in, ctx.Err()
		}
	}
	sidecarArgs = append(sidecarArgs, "--app", in.appAddr)
	in.sidecar, err = startProc("coordsidecar of "+s.service+"@"+s.version, e.dir, filepath.Join(e.dir, logName+".sidecar.log"), nil,
		func(line string) bool { return strings.Contains(line, `"msg":"coordsidecar ready"`) }, sidecarArgs...)
	if err != nil {
		return in, err
	}
	line, err = in.sidecar.await(ctx, 30*time.Second)
	if err != nil {
		if b, _ := os.ReadFile(in.sidecar.logPath); strings.Contains(string(b), "address already in use") {
			return in, fmt.Errorf("%w: %v", errAddrInUse, err)
		}
		return in, err
	}
	var ready map[string]any
	if err := json.Unmarshal([]byte(line), &ready); err != nil {
		return in, fmt.Errorf("%s: %q: %w", in.sidecar.name, line, err)
	}
	in.inbound, _ = ready["inbound"].(string)
	if in.inbound == "" {
		return in, fmt.Errorf("%s: no inbound address in %q", in.sidecar.name, line)
	}
	return in, nil
}

// stopAll stops every sidecar first (each lets its requests finish, ends
// its roots and deregisters), then the applications.
func stopAll(insts []*instance) {
	var wg sync.WaitGroup
	for _, in := range insts {
		if in.sidecar != nil {
			wg.Go(func() { in.sidecar.stop(8 * time.Second) })
		}
	}
	wg.Wait()
	for _, in := range insts {
		if in.app != nil {
			wg.Go(func() { in.app.stop(2 * time.Second) })
		}
	}
	wg.Wait()
}

func stopInstance(in *instance) {
	if in != nil {
		stopAll([]*instance{in})
	}
}

func printInstances(w io.Writer, insts []*instance) {
	fmt.Fprintln(w, "Instances (each application behind its coordsidecar):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SERVICE\tVERSION\tLANGUAGE\tAPPLICATION\tSIDECAR\tINSTANCE")
	for _, in := range insts {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\thttp://%s/\t%s\n", in.service, in.version, in.lang, in.appAddr, in.inbound, in.id)
	}
	tw.Flush()
}
