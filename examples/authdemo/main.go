// Command authdemo runs the seed scenario (Portal, Proc, Auth, DB) as real
// HTTP services on loopback using the sidecar SDK, puts them under load,
// and checks, from what the services themselves recorded, that no request
// ran on two versions of Auth. It prints the address of every instance and
// of the coordinator it uses.
//
// By default it updates Auth (auth-service) itself through the
// coordinator's admin API with the chosen strategy: to v2, or back to v1
// when the coordinator already runs v2 by default (after an earlier run or
// an operator's update). Its last line is then:
//
//	strategy=S requests=N failed=F violations=V update_ms=U p99_ms=P
//
// With --canary 10,50,100 (cv) the update is a canary whose steps move on
// every --canary-step; it logs each step's asked and served weights, and its
// last line says strategy=canary.
//
// With --set it updates Portal and Proc together instead, as one set
// update (DESIGN.md §4.8), with a Proc v2 that needs a request field only
// Portal v2 sends; the load enters at a Web service in front of Portal, and
// the checker also counts a transaction that ran Portal and Proc on
// different versions as a violation. The last line is the same. With
// --canary too, the set update is a canary of the set.
//
// With --lane it creates the lane gray (auth-service at the version the
// update goes to, DESIGN.md §4.9) before the load, tags half of the
// requests x-lane: gray, and updates Auth by promoting the lane with the
// strategy: tagged requests run on the lane's Auth from the start, the
// others move as the strategy says, and the checker also counts a tagged
// transaction served by another Auth than the lane's. The last line is the
// same, with strategy=lane-S.
//
// With --no-update it leaves the updates to an operator (coordctl update,
// rollback, abort): it runs the services and the load until interrupted
// (SIGINT or SIGTERM) or until --duration, if given, prints a running
// summary every --report-every, and ends with:
//
//	mode=no-update requests=N failed=F violations=V updates=U p99_ms=P
//
// where updates counts the updates of auth-service that finished while it
// ran. It then exits 1 if a request failed or its checker saw a violation.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/internal/demoload"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/tlsfiles"
	"github.com/coordinator/coordinator/sidecar"
	"github.com/coordinator/coordinator/strategy"
)

// authService is the service name Auth registers under: the name the
// README's coordctl and curl examples use (Portal, Proc and DB register as
// portal, proc and db).
const authService = "auth-service"

// defaultServer is coordctl's default --server: the suggested commands
// omit --server when the demo uses it.
const defaultServer = "127.0.0.1:7400"

func main() {
	log.SetFlags(0)
	log.SetPrefix("authdemo: ")
	os.Exit(run(os.Args[1:], os.Stdout))
}

type options struct {
	strategy                 string
	coordinator, httpAddr    string
	workers                  int
	duration, updateAt       time.Duration
	timeout, reportEvery     time.Duration
	noUpdate, durationWasSet bool
	canary                   string        // the canary's weights, "" for none
	canaryStep               time.Duration // how long each canary step lasts
	set                      bool          // update Portal and Proc together
	lane                     bool          // update Auth by promoting a lane
	// TLS to the coordinator (sidecars and admin calls alike).
	tls        tlsfiles.Files
	serverName string
}

func run(args []string, stdout io.Writer) int {
	var o options
	fs := flag.NewFlagSet("authdemo", flag.ContinueOnError)
	fs.StringVar(&o.strategy, "strategy", "cv", "naive, wf, bf or cv (not with --no-update)")
	fs.StringVar(&o.coordinator, "coordinator", "", "gRPC address of a running coordinator, such as "+defaultServer+" (default: start one on an embedded etcd)")
	fs.StringVar(&o.httpAddr, "coordinator-http", "", "its HTTP address, only to print (default: asked from the coordinator)")
	fs.IntVar(&o.workers, "concurrency", 16, "concurrent clients")
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "length of the load (with --no-update: until interrupted unless set)")
	fs.DurationVar(&o.updateAt, "update-after", time.Second, "when to start the update")
	fs.DurationVar(&o.timeout, "timeout", 0, "abort the update when it has not switched within this time (0: for wf until the load ends, none for bf and cv)")
	fs.BoolVar(&o.set, "set", false, "update portal and proc together (one set update; proc v2 needs a field only portal v2 sends) instead of auth-service")
	fs.BoolVar(&o.lane, "lane", false, "create the lane gray (auth-service at the new version), tag half the requests x-lane: gray, and update auth-service by promoting the lane")
	fs.BoolVar(&o.noUpdate, "no-update", false, "start no update: run the services and the load until interrupted, leaving updates to an operator (coordctl)")
	fs.DurationVar(&o.reportEvery, "report-every", 5*time.Second, "with --no-update: print a summary this often (0: never)")
	fs.StringVar(&o.canary, "canary", "", "cv: update as a canary with these weights in percent, e.g. 10,50,100")
	fs.DurationVar(&o.canaryStep, "canary-step", time.Second, "with --canary: how long each step lasts")
	envTLS, envName := sidecar.TLSFromEnv()
	fs.StringVar(&o.tls.CA, "tls-ca", envTLS.CA, "CA bundle that verifies the coordinator's certificate (env "+sidecar.EnvTLSCA+")")
	fs.StringVar(&o.tls.Cert, "tls-cert", envTLS.Cert, "client certificate of the demo's services and admin calls (env "+sidecar.EnvTLSCert+")")
	fs.StringVar(&o.tls.Key, "tls-key", envTLS.Key, "its key (env "+sidecar.EnvTLSKey+")")
	fs.StringVar(&o.serverName, "tls-server-name", envName, "name to check in the coordinator's certificate (env "+sidecar.EnvTLSServerName+")")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "duration" {
			o.durationWasSet = true
		}
	})
	kind, err := strategy.Parse(o.strategy)
	if err != nil {
		log.Print(err)
		return 2
	}
	if fs.NArg() > 0 {
		log.Printf("unexpected argument %q", fs.Arg(0))
		return 2
	}
	if o.set && o.noUpdate {
		log.Print("--set and --no-update cannot be used together: --set is the demo's own update")
		return 2
	}
	if o.lane && (o.set || o.noUpdate || o.canary != "" || kind == strategy.NAIVE) {
		log.Print("--lane goes with none of --set, --no-update, --canary and --strategy=naive: it promotes a lane of auth-service with wf, bf or cv")
		return 2
	}
	// SIGINT and SIGTERM stop the load; a second one kills at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	if err := demo(ctx, o, kind, stdout); err != nil {
		log.Print(err)
		return 1
	}
	return 0
}

// errViolation makes the demo exit 1 after its last line.
type errViolation struct{ failed, violations int64 }

func (e errViolation) Error() string {
	return fmt.Sprintf("%d failed requests, %d version-consistency violations", e.failed, e.violations)
}

func demo(ctx context.Context, o options, kind strategy.Kind, stdout io.Writer) error {
	grpcAddr, httpAddr := o.coordinator, o.httpAddr
	if grpcAddr == "" {
		dir, err := os.MkdirTemp("", "authdemo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		srv, err := server.Start(ctx, server.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: dir})
		if err != nil {
			return err
		}
		defer srv.Close(context.Background())
		if _, err := srv.WaitLeading(ctx); err != nil {
			return err
		}
		grpcAddr, httpAddr = srv.GRPCAddr(), srv.HTTPAddr()
	}
	creds, err := tlsfiles.DialCredentials(o.tls, o.serverName)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("coordinator %s: %w", grpcAddr, err)
	}
	defer conn.Close()
	admin := pb.NewAdminServiceClient(conn)
	if httpAddr == "" {
		httpAddr = askHTTPAddr(ctx, admin)
	}

	// Instance ids unique to this run: a second demo on the same
	// coordinator, or one started again before the sessions of a killed
	// one expired, must not resume their sessions.
	suffix := make([]byte, 2)
	_, _ = rand.Read(suffix)
	rec := newRecorder()
	var (
		portal   *service
		services []*service
	)
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range services {
			if err := s.close(cctx); err != nil {
				log.Printf("close %s: %v", s.instance, err)
			}
		}
	}()
	type instanceOf struct {
		name, version string
		deps          []string
		h             func(*service, http.ResponseWriter, *http.Request)
	}
	instances := []instanceOf{
		{authService, "v1", nil, authHandler("v1")},
		{"db", "v1", nil, dbHandler},
		{"proc", "v1", []string{authService, "db"}, procHandler},
		{"portal", "v1", []string{authService, "proc"}, portalHandler},
		{authService, "v2", nil, authHandler("v2")}, // the other version, registered and ready
	}
	// portal is the entry the load requests (Web in front of Portal with
	// --set), updated is what the demo updates.
	root, updated := "portal", authService
	if o.set {
		instances = append(instances[:4],
			instanceOf{"proc", "v2", []string{authService, "db"}, procV2Handler},
			instanceOf{"portal", "v2", []string{authService, "proc"}, portalV2Handler},
			instanceOf{"web", "v1", []string{"portal"}, webHandler})
		root, updated = "web", "portal"
	}
	for _, s := range instances {
		instance := s.name + "-" + s.version + "-" + hex.EncodeToString(suffix)
		svc, err := start(ctx, coordinatorConn{grpcAddr, o.tls, o.serverName}, rec, instance, s.name, s.version, s.deps, s.name == root, s.h)
		if err != nil {
			return fmt.Errorf("start %s@%s with coordinator %s: %w", s.name, s.version, grpcAddr, err)
		}
		services = append(services, svc)
		if s.name == root {
			portal = svc
		}
	}
	state, err := admin.GetService(ctx, &pb.GetServiceRequest{Service: updated, InstanceLimit: 1, TxnLimit: 1})
	if err != nil {
		return fmt.Errorf("coordinator %s: get %s: %w", grpcAddr, updated, err)
	}
	printAddresses(stdout, grpcAddr, httpAddr, services, portal, state.GetDefaultVersion(), o)

	var l demoload.Load
	if o.noUpdate {
		return operated(ctx, o, admin, rec, &l, portal, stdout)
	}

	// The demo's own update: to the version Auth does not run by default.
	to := "v2"
	if state.GetDefaultVersion() == "v2" {
		to = "v1"
		log.Printf("%s already runs v2 by default (an earlier run or an operator's update): this run updates it back to v1", updated)
	}
	if u := state.GetUpdate(); u != nil {
		return fmt.Errorf("%s is being updated already (update %s, %s -> %s, %s): nothing for the demo to do; wait for it, abort it (coordctl abort %s), or run with --no-update",
			updated, u.GetId(), u.GetFromVersion(), u.GetToVersion(), strings.TrimPrefix(u.GetPhase().String(), "PHASE_"), u.GetId())
	}
	if o.lane {
		lane := &pb.Lane{Name: "gray", Members: []*pb.ServiceVersion{{Service: authService, Version: to}}}
		if _, err := admin.CreateLane(ctx, &pb.CreateLaneRequest{Lane: lane}); err != nil {
			return fmt.Errorf("create lane gray: %w", err)
		}
		defer func() { _, _ = admin.DeleteLane(context.Background(), &pb.DeleteLaneRequest{Name: "gray"}) }() // if not promoted
		var n atomic.Uint64
		l.Header = func() (string, string, bool) { return "x-lane", "gray", n.Add(1)%2 == 0 }
		log.Printf("lane gray: %s=%s; half the requests carry x-lane: gray", authService, to)
	}
	l.Start(ctx, "http://"+portal.addr+"/", o.workers, time.Now().Add(o.duration))
	select {
	case <-time.After(o.updateAt):
	case <-ctx.Done():
	}
	wfTimeout := o.timeout
	if wfTimeout == 0 && kind == strategy.WF {
		wfTimeout = o.duration - o.updateAt
	} // BF is bounded by its max-block (the coordinator's default), CV needs none
	updateStart := time.Now()
	req := &pb.StartUpdateRequest{Service: authService, ToVersion: to, Strategy: kind}
	subject := authService
	if o.set {
		req.Service, req.ToVersion, subject = "", "", strings.Join(setServices, "+")
		for _, svc := range setServices {
			req.Members = append(req.Members, &pb.ServiceVersion{Service: svc, Version: to})
		}
	}
	if wfTimeout > 0 {
		req.Timeout = durationpb.New(wfTimeout)
	}
	name := strategy.Name(kind)
	if o.canary != "" {
		if err := canaryRequest(req, o); err != nil {
			l.Wait()
			return err
		}
		name = "canary"
	}
	var u *pb.Update
	if o.lane {
		name = "lane-" + name
		u, err = admin.PromoteLane(ctx, &pb.PromoteLaneRequest{Name: "gray", Strategy: kind, Timeout: req.Timeout})
	} else {
		u, err = admin.StartUpdate(ctx, req)
	}
	if err != nil {
		l.Wait()
		return fmt.Errorf("start update of %s to %s: %w", subject, to, err)
	}
	u, err = demoload.WaitUpdate(ctx, admin, u.GetId(), time.Now().Add(o.duration+30*time.Second))
	updateMS := time.Since(updateStart).Milliseconds()
	if err != nil {
		l.Wait()
		return err
	}
	reason := ""
	if u.GetReason() != "" {
		reason = " (" + u.GetReason() + ")"
	}
	log.Printf("update %s of %s to %s (%s): %s%s after %d ms", u.GetId(), subject, to, name,
		strings.TrimPrefix(u.GetPhase().String(), "PHASE_"), reason, updateMS)
	logCanary(u, subject)
	l.Wait()
	if o.lane {
		log.Printf("lane gray: %d sub-requests served in it", rec.laneRequests())
	}
	if e := l.FirstErr.Load(); e != nil {
		log.Printf("first failure: %s", e)
	}
	fmt.Fprintf(stdout, "strategy=%s requests=%d failed=%d violations=%d update_ms=%d p99_ms=%.1f\n",
		name, l.Requests.Load(), l.Failed.Load(), rec.violations(), updateMS, demoload.MS(l.Lat.Quantile(0.99)))
	return nil
}

// operated runs the load until ctx ends (a signal) or --duration, if set,
// passes, with a summary every --report-every, and prints the last line.
func operated(ctx context.Context, o options, admin pb.AdminServiceClient, rec *recorder, l *demoload.Load, portal *service, stdout io.Writer) error {
	before := finishedUpdates(ctx, admin)
	var deadline time.Time
	if o.durationWasSet {
		deadline = time.Now().Add(o.duration)
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	start := time.Now()
	l.Start(loadCtx, "http://"+portal.addr+"/", o.workers, deadline)
	var tick <-chan time.Time
	if o.reportEvery > 0 {
		t := time.NewTicker(o.reportEvery)
		defer t.Stop()
		tick = t.C
	}
	var end <-chan time.Time
	if !deadline.IsZero() {
		end = time.After(time.Until(deadline))
	}
	why := "--duration passed"
	var lastReq int64
	lastServed := map[string]int64{}
loop:
	for {
		select {
		case <-ctx.Done():
			why = "interrupted"
			break loop
		case <-end:
			break loop
		case <-tick:
			req := l.Requests.Load()
			served := rec.authServed()
			def := "?"
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if s, err := admin.GetService(sctx, &pb.GetServiceRequest{Service: authService, InstanceLimit: 1, TxnLimit: 1}); err == nil {
				def = s.GetDefaultVersion()
				if u := s.GetUpdate(); u != nil {
					def += fmt.Sprintf(" (updating to %s: %s)", u.GetToVersion(), strings.TrimPrefix(u.GetPhase().String(), "PHASE_"))
				}
			}
			cancel()
			fmt.Fprintf(stdout, "[%5s] requests=%d (+%d) failed=%d violations=%d %s: served v1=+%d v2=+%d, default %s\n",
				time.Since(start).Round(time.Second), req, req-lastReq, l.Failed.Load(), rec.violations(), authService,
				served["v1"]-lastServed["v1"], served["v2"]-lastServed["v2"], def)
			lastReq, lastServed = req, served
		}
	}
	fmt.Fprintf(stdout, "%s after %s: stopping the load, then deregistering the instances\n", why, time.Since(start).Round(time.Millisecond))
	stopLoad()
	l.Wait()
	// Count the updates that finished while the demo ran (a fresh context:
	// ctx has ended on a signal).
	actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	updates := 0
	for id := range finishedUpdates(actx, admin) {
		if !before[id] {
			updates++
		}
	}
	if e := l.FirstErr.Load(); e != nil {
		log.Printf("first failure: %s", e)
	}
	failed, viol := l.Failed.Load(), int64(rec.violations())
	fmt.Fprintf(stdout, "mode=no-update requests=%d failed=%d violations=%d updates=%d p99_ms=%.1f\n",
		l.Requests.Load(), failed, viol, updates, demoload.MS(l.Lat.Quantile(0.99)))
	if failed > 0 || viol > 0 {
		return errViolation{failed, viol}
	}
	return nil
}

// finishedUpdates returns the ids of the finished updates of Auth the
// coordinator keeps (nil if it cannot say).
func finishedUpdates(ctx context.Context, admin pb.AdminServiceClient) map[string]bool {
	r, err := admin.ListUpdates(ctx, &pb.ListUpdatesRequest{Service: authService, Limit: 1000})
	if err != nil {
		log.Printf("list updates of %s: %v", authService, err)
		return nil
	}
	ids := map[string]bool{}
	for _, u := range r.GetUpdates() {
		if u.GetFinishedAt() != nil {
			ids[u.GetId()] = true
		}
	}
	return ids
}

// askHTTPAddr asks the coordinator for the HTTP address of the replica that
// answers ("" if it cannot say).
func askHTTPAddr(ctx context.Context, admin pb.AdminServiceClient) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err := admin.GetCluster(ctx, &pb.GetClusterRequest{})
	if err != nil {
		return ""
	}
	for _, r := range c.GetReplicas() {
		if r.GetName() == c.GetAnsweredBy() {
			return r.GetHttpAddress()
		}
	}
	return c.GetLeader().GetHttpAddress()
}

// printAddresses says where everything listens, and, with --no-update,
// what an operator may run.
func printAddresses(w io.Writer, grpcAddr, httpAddr string, services []*service, portal *service, def string, o options) {
	fmt.Fprintf(w, "Coordinator: %s (gRPC: sidecars, coordctl --server)\n", grpcAddr)
	if httpAddr != "" {
		scheme := "http"
		if o.tls.CA != "" || o.tls.Cert != "" {
			scheme = "https" // a coordinator reached over TLS serves HTTPS too
		}
		fmt.Fprintf(w, "Coordinator HTTP: %s://%s/ (REST /v1/..., web view %s://%s/ui/)\n", scheme, httpAddr, scheme, httpAddr)
	}
	fmt.Fprintln(w, "Instances:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SERVICE\tVERSION\tADDRESS\tINSTANCE")
	sorted := append([]*service(nil), services...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].name != sorted[j].name {
			return sorted[i].name < sorted[j].name
		}
		return sorted[i].version < sorted[j].version
	})
	for _, s := range sorted {
		fmt.Fprintf(tw, "  %s\t%s\thttp://%s/\t%s\n", s.name, s.version, s.addr, s.instance)
	}
	tw.Flush()
	until := "for " + o.duration.String()
	if o.noUpdate && !o.durationWasSet {
		until = "until interrupted (Ctrl-C)"
	}
	if o.set {
		fmt.Fprintf(w, "Load: %d clients on http://%s/ (web, in front of portal) %s; portal runs %s by default.\n", o.workers, portal.addr, until, def)
	} else {
		fmt.Fprintf(w, "Load: %d clients on http://%s/ (portal) %s; %s runs %s by default.\n", o.workers, portal.addr, until, authService, def)
	}
	if !o.noUpdate {
		return
	}
	ctl := "go run ./cmd/coordctl"
	if grpcAddr != defaultServer {
		ctl += " --server " + grpcAddr
	}
	fmt.Fprintf(w, "No update from the demo: they are yours, for example\n")
	fmt.Fprintf(w, "  %s services\n", ctl)
	fmt.Fprintf(w, "  %s update %s --strategy=cv --watch\n", ctl, authService)
	fmt.Fprintf(w, "  %s rollback %s\n", ctl, authService)
}
