package main

import (
	"context"
	"net/http"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
)

// The admin listener serves net/http/pprof only with --pprof, and the flag
// sets it.
func TestPprofOnlyWhenAsked(t *testing.T) {
	cfg, err := parseConfig([]string{"--coordinator", "c:9090", "--service", "s", "--version", "v1", "--app", "a:1", "--pprof"}, nil)
	if err != nil || !cfg.Pprof {
		t.Fatalf("--pprof: %+v, %v", cfg, err)
	}
	ts := servertest.Start(t, "")
	app := serveApp(t, &echoApp{})
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	status := func(p *proxy, path string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.listenerAddr("admin")+path, nil)
		resp, err := clientFor(1).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	off := startProxy(t, ts, "a", "v1", app, nil)
	if code := status(off, "/debug/pprof/goroutine?debug=1"); code != http.StatusNotFound {
		t.Errorf("without --pprof, /debug/pprof/goroutine answered %d, want 404", code)
	}
	on := startProxy(t, ts, "b", "v1", app, nil, func(c *config) { c.Pprof = true })
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
		if code := status(on, path); code != http.StatusOK {
			t.Errorf("with --pprof, %s answered %d, want 200", path, code)
		}
	}
}
