package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/coordinator/coordinator/sidecar"
)

// Modes of the proxy: in modeDirect the proxy picks the endpoint of every
// outbound call; in modeIstio it sends each to the callee's Kubernetes
// service host, stamped with the x-version header, and Istio routes it
// (see istio.go).
const (
	modeDirect = "direct"
	modeIstio  = "istio"
)

// config is what coordsidecar runs with: a config file (--config, YAML or
// JSON, with the field names below) overridden by the flags given.
type config struct {
	Mode         string       `json:"mode"`
	Coordinators []string     `json:"coordinators"`
	Service      string       `json:"service"`
	Version      string       `json:"version"`
	InstanceID   string       `json:"instanceID"`
	Listen       string       `json:"listen"`
	App          string       `json:"app"`
	Advertise    string       `json:"advertise"`
	Admin        string       `json:"admin"`
	HTTPProxy    string       `json:"httpProxy"`
	Dependencies []dependency `json:"dependencies"`
	EntryPoint   bool         `json:"entryPoint"`
	Grace        duration     `json:"grace"`
	LogLevel     string       `json:"logLevel"`
	LogFormat    string       `json:"logFormat"`
	// Pprof serves net/http/pprof's /debug/pprof/ on the admin listener,
	// for profiling (off by default: it exposes the process's internals).
	Pprof bool `json:"pprof"`
	// Procs is how many OS threads may run the proxy's Go code at once
	// (GOMAXPROCS), as Envoy's --concurrency: a sidecar shares its pod's
	// cores with the application, and one thread forwards thousands of
	// requests a second with fewer hand-offs between threads (each adds
	// wake-up latency) than two. 0 leaves the Go runtime's choice (the
	// cores, or the container's CPU limit).
	Procs int `json:"procs"`
	// GCPercent is the garbage collector's target (GOGC): a collection
	// starts when the heap has grown by this percentage since the last.
	// The proxy's live heap is a few MB, so Go's default of 100 collects
	// several times a second at 1,000 requests/s, and a collection's
	// mark work delays the requests that arrive meanwhile: the tail of
	// the added latency. 200 collects half as often, for a few more MB of
	// memory (400 cost 12 MB more than 100 at 1,000 requests/s, too close
	// to the 40 MB a sidecar may take).
	GCPercent int `json:"gcPercent"`
	// TLS to the coordinators: CA verifies them; Cert and Key are this
	// workload's certificate (its identity). Default from
	// COORDINATOR_TLS_CA, _CERT, _KEY and _SERVER_NAME.
	TLSCA         string `json:"tlsCA"`
	TLSCert       string `json:"tlsCert"`
	TLSKey        string `json:"tlsKey"`
	TLSServerName string `json:"tlsServerName"`
}

// dependency is a service this one may call; with Listen, a local listener
// whose every request goes to it.
type dependency struct {
	Service string `json:"service"`
	Listen  string `json:"listen,omitempty"`
	// Host (istio mode) is where the calls of the listener go: the
	// service's Kubernetes host and port; default SERVICE:80.
	Host string `json:"host,omitempty"`
}

// dependencyHost is where istio mode sends the calls to service.
func (c *config) dependencyHost(service string) string {
	for _, d := range c.Dependencies {
		if d.Service == service && d.Host != "" {
			return d.Host
		}
	}
	return net.JoinHostPort(service, "80")
}

// duration is a time.Duration written as "20s" in a config file.
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"20s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	*d = duration(v)
	return err
}

func defaults() config {
	files, serverName := sidecar.TLSFromEnv()
	return config{
		Mode:          modeDirect,
		Listen:        "127.0.0.1:15001",
		Admin:         "127.0.0.1:15020",
		Grace:         duration(20 * time.Second),
		LogLevel:      "info",
		LogFormat:     "text",
		Procs:         1,
		GCPercent:     200,
		TLSCA:         files.CA,
		TLSCert:       files.Cert,
		TLSKey:        files.Key,
		TLSServerName: serverName,
	}
}

// usageError is a wrong command line or config: exit status 2.
type usageError struct{ error }

// parseConfig reads the command line (and the file it names).
func parseConfig(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("coordsidecar", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported in one line by run
	var (
		file  = fs.String("config", "", "config file (YAML or JSON); flags given override it")
		flagC = defaults()
		coord listFlag
		deps  listFlag
		grace = fs.Duration("grace", time.Duration(flagC.Grace), "how long in-flight requests may run after SIGTERM")
	)
	fs.StringVar(&flagC.Mode, "mode", flagC.Mode, "routing mode: direct (the proxy picks each call's endpoint) or istio (calls go to the service's host with x-version; Istio routes)")
	fs.Var(&coord, "coordinator", "coordinator gRPC address host:port (repeat, or comma-separate, for replicas)")
	fs.StringVar(&flagC.Service, "service", "", "service this instance runs (required)")
	fs.StringVar(&flagC.Version, "version", "", "version this instance runs (required)")
	fs.StringVar(&flagC.InstanceID, "instance-id", "", "instance id of the session (default service-version@advertised address)")
	fs.StringVar(&flagC.Listen, "listen", flagC.Listen, "inbound listener: other services reach the application here")
	fs.StringVar(&flagC.App, "app", "", "the application's address host:port (required)")
	fs.StringVar(&flagC.Advertise, "advertise", "", "address registered for this instance (default: the inbound listener's)")
	fs.StringVar(&flagC.Admin, "admin", flagC.Admin, "admin listener: /healthz and /metrics")
	fs.StringVar(&flagC.HTTPProxy, "http-proxy", "", "optional HTTP/1.1 forward proxy listener for outbound calls (HTTP_PROXY)")
	fs.Var(&deps, "dep", "dependency SERVICE or SERVICE=LISTEN (a local listener for calls to it); repeat")
	var depHosts listFlag
	fs.Var(&depHosts, "dep-host", "istio mode: SERVICE=HOST:PORT, where calls to a dependency's listener go (default SERVICE:80); repeat")
	fs.BoolVar(&flagC.EntryPoint, "entry-point", false, "strip the mesh headers from inbound requests (a service called from outside the mesh)")
	fs.StringVar(&flagC.LogLevel, "log-level", flagC.LogLevel, "debug, info, warn or error")
	fs.StringVar(&flagC.LogFormat, "log-format", flagC.LogFormat, "text or json")
	fs.IntVar(&flagC.Procs, "procs", flagC.Procs, "OS threads that run the proxy at once (GOMAXPROCS); 0: the cores or the container's CPU limit")
	fs.IntVar(&flagC.GCPercent, "gc-percent", flagC.GCPercent, "garbage collection target (GOGC): collect when the heap has grown by this percentage")
	fs.BoolVar(&flagC.Pprof, "pprof", false, "serve net/http/pprof's /debug/pprof/ on the admin listener (profiling)")
	fs.StringVar(&flagC.TLSCA, "tls-ca", flagC.TLSCA, "CA bundle that verifies the coordinators' certificates (env "+sidecar.EnvTLSCA+")")
	fs.StringVar(&flagC.TLSCert, "tls-cert", flagC.TLSCert, "this workload's client certificate to the coordinators: its SPIFFE ID or CN is the identity that may register as --service (env "+sidecar.EnvTLSCert+")")
	fs.StringVar(&flagC.TLSKey, "tls-key", flagC.TLSKey, "the client certificate's key (env "+sidecar.EnvTLSKey+")")
	fs.StringVar(&flagC.TLSServerName, "tls-server-name", flagC.TLSServerName, "name to check in the coordinators' certificates (default: the host dialled; env "+sidecar.EnvTLSServerName+")")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr, "Usage: coordsidecar --coordinator HOST:PORT --service S --version V --app HOST:PORT [flags]")
			fs.PrintDefaults()
			return config{}, err
		}
		return config{}, usageError{err}
	}
	if fs.NArg() > 0 {
		return config{}, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	cfg := defaults()
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err != nil {
			return config{}, usageError{fmt.Errorf("config: %w", err)}
		}
		if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
			return config{}, usageError{fmt.Errorf("config %s: %w", *file, err)}
		}
	}
	flagC.Grace = duration(*grace)
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "mode":
			cfg.Mode = flagC.Mode
		case "coordinator":
			cfg.Coordinators = coord
		case "service":
			cfg.Service = flagC.Service
		case "version":
			cfg.Version = flagC.Version
		case "instance-id":
			cfg.InstanceID = flagC.InstanceID
		case "listen":
			cfg.Listen = flagC.Listen
		case "app":
			cfg.App = flagC.App
		case "advertise":
			cfg.Advertise = flagC.Advertise
		case "admin":
			cfg.Admin = flagC.Admin
		case "http-proxy":
			cfg.HTTPProxy = flagC.HTTPProxy
		case "dep":
			cfg.Dependencies = nil
			for _, d := range deps {
				svc, lis, _ := strings.Cut(d, "=")
				cfg.Dependencies = append(cfg.Dependencies, dependency{Service: svc, Listen: lis})
			}
		case "entry-point":
			cfg.EntryPoint = flagC.EntryPoint
		case "grace":
			cfg.Grace = flagC.Grace
		case "log-level":
			cfg.LogLevel = flagC.LogLevel
		case "log-format":
			cfg.LogFormat = flagC.LogFormat
		case "pprof":
			cfg.Pprof = flagC.Pprof
		case "procs":
			cfg.Procs = flagC.Procs
		case "gc-percent":
			cfg.GCPercent = flagC.GCPercent
		case "tls-ca":
			cfg.TLSCA = flagC.TLSCA
		case "tls-cert":
			cfg.TLSCert = flagC.TLSCert
		case "tls-key":
			cfg.TLSKey = flagC.TLSKey
		case "tls-server-name":
			cfg.TLSServerName = flagC.TLSServerName
		}
	})
	for _, dh := range depHosts {
		svc, host, ok := strings.Cut(dh, "=")
		i := slices.IndexFunc(cfg.Dependencies, func(d dependency) bool { return d.Service == svc })
		if !ok || i < 0 {
			return config{}, usageError{fmt.Errorf("--dep-host %q: want SERVICE=HOST:PORT of a --dep SERVICE", dh)}
		}
		cfg.Dependencies[i].Host = host
	}
	if err := cfg.validate(); err != nil {
		return config{}, usageError{err}
	}
	return cfg, nil
}

// validate checks cfg; its errors are one line each.
func (c *config) validate() error {
	switch {
	case c.Mode != modeDirect && c.Mode != modeIstio:
		return fmt.Errorf("--mode %q: want %q or %q", c.Mode, modeDirect, modeIstio)
	case len(c.Coordinators) == 0:
		return errors.New("--coordinator is required")
	case c.Service == "":
		return errors.New("--service is required")
	case c.Version == "":
		return errors.New("--version is required")
	case c.App == "":
		return errors.New("--app is required")
	case c.Grace <= 0:
		return errors.New("--grace must be positive")
	case c.Procs < 0 || c.Procs > 1024:
		return fmt.Errorf("--procs %d: want 0 (the runtime's choice) to 1024", c.Procs)
	case c.GCPercent < 10 || c.GCPercent > 10000:
		return fmt.Errorf("--gc-percent %d: want 10 to 10000", c.GCPercent)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("--log-format %q: want text or json", c.LogFormat)
	}
	addrs := map[string]string{}
	check := func(name, addr string, optional bool) error {
		if addr == "" && optional {
			return nil
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%s %q: want host:port: %v", name, addr, err)
		}
		if prev, ok := addrs[addr]; ok && !strings.HasSuffix(addr, ":0") {
			return fmt.Errorf("%s %q: already used by %s", name, addr, prev)
		}
		addrs[addr] = name
		return nil
	}
	for _, co := range c.Coordinators {
		if _, _, err := net.SplitHostPort(co); err != nil {
			return fmt.Errorf("--coordinator %q: want host:port: %v", co, err)
		}
	}
	if _, _, err := net.SplitHostPort(c.App); err != nil {
		return fmt.Errorf("--app %q: want host:port: %v", c.App, err)
	}
	if c.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			return fmt.Errorf("--advertise %q: want host:port: %v", c.Advertise, err)
		}
	}
	if err := check("--listen", c.Listen, false); err != nil {
		return err
	}
	if err := check("--admin", c.Admin, false); err != nil {
		return err
	}
	if err := check("--http-proxy", c.HTTPProxy, true); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, d := range c.Dependencies {
		if d.Service == "" || strings.ContainsAny(d.Service, " /:=") {
			return fmt.Errorf("--dep %q: not a service name", d.Service)
		}
		if seen[d.Service] {
			return fmt.Errorf("--dep %q: given twice", d.Service)
		}
		seen[d.Service] = true
		if err := check("--dep "+d.Service, d.Listen, true); err != nil {
			return err
		}
		if d.Host != "" {
			if c.Mode != modeIstio {
				return fmt.Errorf("--dep-host %s: only in --mode %s (in %s mode the proxy picks endpoints)", d.Service, modeIstio, c.Mode)
			}
			if _, _, err := net.SplitHostPort(d.Host); err != nil {
				return fmt.Errorf("--dep-host %s=%s: want host:port: %v", d.Service, d.Host, err)
			}
		}
	}
	return nil
}

// listFlag is a repeatable flag whose values may also be comma-separated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}
