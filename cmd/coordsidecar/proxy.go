package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coordinator/coordinator/security/tlsfiles"
	"github.com/coordinator/coordinator/sidecar"
)

// closeTimeout bounds the final flush and deregistration after the grace
// period, and the wait for handlers cut at its end.
const closeTimeout = 10 * time.Second

// eventFlushInterval is the longest a non-urgent event (BEGIN, a CALL
// routed by the table, RETURN, END, DONE) waits to be sent with the next
// ones; events that need an answer (a CALL waiting for its decision, a
// routing ack) are sent at once, with what waits before them, whatever it
// is. The SDK's default, 500µs, sends about two batches per request at
// 1,000 requests/s, each a gRPC message, a write, and an ack back to read
// and apply: in bench/proxy the event stream was a third of the caller's
// sidecar CPU. 5ms (the coordinator's own write-behind interval) sends a
// tenth as many; it delays what the coordinator learns by at most 5ms,
// which nothing waits for outside an update and which is small beside a
// transaction's own time inside one.
const eventFlushInterval = 5 * time.Millisecond

// proxy is a running coordsidecar: its listeners, its session with the
// coordinator and its state.
type proxy struct {
	cfg        config
	lg         *slog.Logger
	instanceID string
	client     *sidecar.Client
	up         *upstream
	met        *metrics
	traces     *traces
	lanes      *lanes
	pins       *pins // istio mode: versions each transaction used, by service
	buffers    *buffers

	data  []*listener // inbound, dependencies, HTTP proxy
	admin *listener

	ready    atomic.Bool // registered, serving
	draining atomic.Bool
	handlers sync.WaitGroup // requests being proxied
}

// listener is one bound address and the server on it.
type listener struct {
	name string // "inbound", "dep-auth", "http-proxy", "admin"
	lis  net.Listener
	srv  *http.Server
}

func (l *listener) addr() string { return l.lis.Addr().String() }

// start binds every listener, registers with the coordinator (the
// advertised address is the inbound listener's, once bound, unless
// --advertise says otherwise), then serves. It returns when the instance
// is registered and serving, or with an error (nothing left running).
func start(ctx context.Context, cfg config, lg *slog.Logger) (_ *proxy, err error) {
	p := &proxy{cfg: cfg, lg: lg, up: newUpstream(), traces: newTraces(), lanes: newLanes(), pins: newPins(), buffers: newBuffers()}
	var bound []*listener
	defer func() {
		if err != nil {
			for _, l := range bound {
				_ = l.lis.Close()
			}
			p.up.close()
		}
	}()
	bind := func(name, addr string) (*listener, error) {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s listener: %w", name, err)
		}
		l := &listener{name: name, lis: lis}
		bound = append(bound, l)
		return l, nil
	}
	inbound, err := bind("inbound", cfg.Listen)
	if err != nil {
		return nil, err
	}
	advertise := cfg.Advertise
	if advertise == "" {
		advertise = inbound.addr()
		if ip := inbound.lis.Addr().(*net.TCPAddr).IP; ip.IsUnspecified() {
			return nil, fmt.Errorf("--listen %s binds every interface: say with --advertise where other services reach this instance", cfg.Listen)
		}
	}
	p.instanceID = cfg.InstanceID
	if p.instanceID == "" {
		p.instanceID = cfg.Service + "-" + cfg.Version + "@" + advertise
	}
	var deps []string
	depLis := map[string]*listener{}
	for _, d := range cfg.Dependencies {
		deps = append(deps, d.Service)
		if d.Listen != "" {
			if depLis[d.Service], err = bind("dep-"+d.Service, d.Listen); err != nil {
				return nil, err
			}
		}
	}
	var proxyLis *listener
	if cfg.HTTPProxy != "" {
		if proxyLis, err = bind("http-proxy", cfg.HTTPProxy); err != nil {
			return nil, err
		}
	}
	if p.admin, err = bind("admin", cfg.Admin); err != nil {
		return nil, err
	}

	p.client, err = sidecar.New(sidecar.Config{
		Coordinators:  cfg.Coordinators,
		InstanceID:    p.instanceID,
		Service:       cfg.Service,
		Version:       cfg.Version,
		Address:       advertise,
		Dependencies:  deps,
		EntryPoint:    cfg.EntryPoint,
		FlushInterval: eventFlushInterval,
		Logger:        lg.With("component", "sdk"),
		TLS:           tlsfiles.Files{CA: cfg.TLSCA, Cert: cfg.TLSCert, Key: cfg.TLSKey},
		TLSServerName: cfg.TLSServerName,
	})
	if err != nil {
		return nil, err
	}
	p.met = newMetrics(p.client)

	inbound.srv = newServer(p.inboundHandler(), p.logAt("inbound"))
	p.data = append(p.data, inbound)
	for _, d := range cfg.Dependencies {
		if l := depLis[d.Service]; l != nil {
			l.srv = newServer(p.outboundHandler(d.Service), p.logAt("outbound"))
			p.data = append(p.data, l)
		}
	}
	if proxyLis != nil {
		proxyLis.srv = newServer(p.httpProxyHandler(), p.logAt("http-proxy"))
		p.data = append(p.data, proxyLis)
	}
	p.admin.srv = &http.Server{
		Handler: p.adminHandler(), ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes,
		ErrorLog: newLogLogger(p.logAt("admin")),
	}
	go p.serve(p.admin) // /healthz says "starting" until registered

	lg.Info("registering", "coordinators", cfg.Coordinators, "instance", p.instanceID,
		"service", cfg.Service, "version", cfg.Version, "address", advertise, "dependencies", deps)
	if err := p.client.Start(ctx); err != nil {
		closeCtx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		_ = p.client.Close(closeCtx)
		_ = p.admin.srv.Close()
		return nil, fmt.Errorf("register with the coordinator: %w", err)
	}
	for _, l := range p.data {
		go p.serve(l)
	}
	p.ready.Store(true)
	attrs := []any{"mode", cfg.Mode, "instance", p.instanceID, "app", cfg.App}
	for _, l := range append(p.data, p.admin) {
		attrs = append(attrs, l.name, l.addr())
	}
	lg.Info("coordsidecar ready", attrs...)
	return p, nil
}

func (p *proxy) serve(l *listener) {
	if err := l.srv.Serve(l.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		p.lg.Error("listener failed", "listener", l.name, "err", err)
	}
}

// shutdown stops accepting, lets in-flight requests finish within the
// grace period (cutting those still running at its end), so that the roots
// begun here end, then flushes the events and deregisters.
func (p *proxy) shutdown(ctx context.Context) error {
	p.draining.Store(true)
	graceCtx, cancel := context.WithTimeout(ctx, time.Duration(p.cfg.Grace))
	defer cancel()
	var wg sync.WaitGroup
	cut := atomic.Bool{}
	for _, l := range p.data {
		wg.Go(func() {
			if err := l.srv.Shutdown(graceCtx); err != nil {
				cut.Store(true)
				_ = l.srv.Close()
			}
		})
	}
	wg.Wait()
	if cut.Load() {
		p.lg.Warn("grace period over: in-flight requests cut", "grace", time.Duration(p.cfg.Grace))
	}
	// Handlers of cut (or hijacked) connections return once their
	// requests' contexts end; each ends the root it began.
	handlersDone := make(chan struct{})
	go func() { p.handlers.Wait(); close(handlersDone) }()
	select {
	case <-handlersDone:
	case <-time.After(closeTimeout):
		p.lg.Warn("handlers still running after the grace period; the coordinator ends their roots with the session")
	}
	p.up.close()
	closeCtx, cancelClose := context.WithTimeout(ctx, closeTimeout)
	defer cancelClose()
	err := p.client.Close(closeCtx) // deregisters
	if err != nil {
		err = fmt.Errorf("deregister: %w", err)
	}
	adminCtx, cancelAdmin := context.WithTimeout(ctx, time.Second)
	defer cancelAdmin()
	if p.admin.srv.Shutdown(adminCtx) != nil {
		_ = p.admin.srv.Close()
	}
	return err
}
