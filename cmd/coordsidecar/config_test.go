package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// A wrong command line exits with status 2 and one line saying what is
// wrong.
func TestBadCommandLinesExit2WithOneLine(t *testing.T) {
	base := []string{"--coordinator", "127.0.0.1:9090", "--service", "s", "--version", "v1", "--app", "127.0.0.1:8080"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--coordinator is required"},
		{base[:6], "--app is required"},
		{append(slices.Clone(base), "--mode", "linkerd"), `--mode "linkerd": want "direct" or "istio"`},
		{append(slices.Clone(base), "--dep", "b", "--dep-host", "b=b.shop:80"), `--dep-host b: only in --mode istio`},
		{append(slices.Clone(base), "--mode", "istio", "--dep", "b", "--dep-host", "b=nohost"), `--dep-host b=nohost: want host:port`},
		{append(slices.Clone(base), "--mode", "istio", "--dep-host", "c=c:80"), `--dep-host "c=c:80": want SERVICE=HOST:PORT of a --dep SERVICE`},
		{append(slices.Clone(base), "--app", "nohost"), `--app "nohost": want host:port`},
		{append(slices.Clone(base), "--dep", "b", "--dep", "b=127.0.0.1:0"), `--dep "b": given twice`},
		{append(slices.Clone(base), "--dep", "b=127.0.0.1:7001", "--http-proxy", "127.0.0.1:7001"), `--dep b "127.0.0.1:7001": already used by --http-proxy`},
		{append(slices.Clone(base), "--grace", "0s"), "--grace must be positive"},
		{append(slices.Clone(base), "--log-level", "loud"), `--log-level "loud"`},
		{append(slices.Clone(base), "--procs", "-1"), "--procs -1: want 0 (the runtime's choice) to 1024"},
		{append(slices.Clone(base), "--gc-percent", "5"), "--gc-percent 5: want 10 to 10000"},
		{append(slices.Clone(base), "--nope"), "flag provided but not defined: -nope"},
		{append(slices.Clone(base), "extra"), `unexpected argument "extra"`},
		{append(slices.Clone(base), "--config", "/does/not/exist"), "config: open /does/not/exist"},
	} {
		var stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stderr)
		out := stderr.String()
		if code != 2 || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "coordsidecar: "+tc.want) {
			t.Errorf("run %q = %d, %q; want 2 and one line coordsidecar: %s...", tc.args, code, out, tc.want)
		}
	}
}

// A config file (YAML, or JSON) gives the settings; flags given override
// them; a field the config does not have is an error.
func TestConfigFileAndFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "coordsidecar.yaml")
	if err := os.WriteFile(file, []byte(`
coordinators: [10.0.0.1:9090, 10.0.0.2:9090]
service: portal
version: v1
app: 127.0.0.1:8080
listen: 0.0.0.0:15001
advertise: portal-0.portal:15001
dependencies:
  - service: auth
    listen: 127.0.0.1:7001
  - service: proc
grace: 3s
entryPoint: true
procs: 2
gcPercent: 150
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseConfig([]string{"--config", file, "--version", "v2", "--dep", "db=127.0.0.1:7003", "--gc-percent", "300"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Coordinators, []string{"10.0.0.1:9090", "10.0.0.2:9090"}) || cfg.Service != "portal" || cfg.Version != "v2" ||
		cfg.App != "127.0.0.1:8080" || cfg.Listen != "0.0.0.0:15001" || cfg.Advertise != "portal-0.portal:15001" ||
		time.Duration(cfg.Grace) != 3*time.Second || !cfg.EntryPoint || cfg.Admin != "127.0.0.1:15020" || cfg.Mode != modeDirect ||
		cfg.Procs != 2 || cfg.GCPercent != 300 {
		t.Fatalf("config %+v", cfg)
	}
	if !slices.Equal(cfg.Dependencies, []dependency{{Service: "db", Listen: "127.0.0.1:7003"}}) {
		t.Fatalf("--dep should replace the file's dependencies: %+v", cfg.Dependencies)
	}
	cfg, err = parseConfig([]string{"--config", file}, &bytes.Buffer{})
	if err != nil || !slices.Equal(cfg.Dependencies, []dependency{{Service: "auth", Listen: "127.0.0.1:7001"}, {Service: "proc"}}) {
		t.Fatalf("dependencies from the file: %+v, %v", cfg.Dependencies, err)
	}

	jsonFile := filepath.Join(dir, "c.json")
	if err := os.WriteFile(jsonFile, []byte(`{"coordinators":["c:9090"],"service":"s","version":"v1","app":"a:1","grace":"1m","nope":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := parseConfig([]string{"--config", jsonFile}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), `unknown field "nope"`) {
		t.Fatalf("a config with an unknown field: %v", err)
	}
}

// An inbound listener on every interface needs --advertise: other
// services could not reach 0.0.0.0.
func TestListenOnEveryInterfaceNeedsAdvertise(t *testing.T) {
	cfg := defaults()
	cfg.Coordinators = []string{"127.0.0.1:1"}
	cfg.Service, cfg.Version, cfg.App = "s", "v1", "127.0.0.1:1"
	cfg.Listen, cfg.Admin = "0.0.0.0:0", "127.0.0.1:0"
	_, err := start(context.Background(), cfg, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "--advertise") {
		t.Fatalf("start = %v, want an error naming --advertise", err)
	}
}
