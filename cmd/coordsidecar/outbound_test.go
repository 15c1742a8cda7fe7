package main

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/sidecar"
)

// Through the HTTP proxy listener, a request's host names the service it
// goes to (b: routed and reported); a host that is no service of the mesh
// gets the request untouched. A dependency listener of a service that never
// registered answers 503 rather than sending the call anywhere. The
// metrics count each.
func TestHTTPProxyAndUnknownDependency(t *testing.T) {
	ts := servertest.Start(t, "")
	bApp, external := &echoApp{}, &echoApp{}
	startProxy(t, ts, "b", "v1", serveApp(t, bApp), nil)
	extAddr := serveApp(t, external)
	a := startProxy(t, ts, "a", "v1", serveApp(t, &echoApp{}), []dependency{{Service: "b"}, {Service: "nowhere", Listen: "127.0.0.1:0"}},
		func(c *config) { c.HTTPProxy = "127.0.0.1:0" })
	proxyURL, _ := url.Parse("http://" + a.listenerAddr("http-proxy"))
	viaProxy := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	do := func(c *http.Client, u string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, _ := do(viaProxy, "http://b/hello?x=1"); code != http.StatusCreated {
		t.Fatalf("GET http://b/hello through the proxy: %d", code)
	}
	seen := bApp.last(t)
	if seen.uri != "/hello?x=1" || seen.host != "b" || !txnIDRe.MatchString(seen.header.Get(sidecar.HeaderTxn)) {
		t.Fatalf("b got %s (Host %s) with mesh header %q", seen.uri, seen.host, seen.header.Get(sidecar.HeaderTxn))
	}
	if code, _ := do(viaProxy, "http://"+extAddr+"/outside"); code != http.StatusCreated {
		t.Fatalf("GET of a host outside the mesh through the proxy: %d", code)
	}
	if seen := external.last(t); seen.uri != "/outside" || seen.header.Get(sidecar.HeaderTxn) != "" {
		t.Fatalf("the host outside the mesh got %s with mesh header %q", seen.uri, seen.header.Get(sidecar.HeaderTxn))
	}
	if code, body := do(clientFor(1), "http://"+a.listenerAddr("dep-nowhere")+"/"); code != http.StatusServiceUnavailable ||
		!strings.Contains(body, "not a service of the mesh") {
		t.Fatalf("a call to a service that never registered: %d %q, want 503", code, body)
	}

	_, metrics := do(clientFor(1), "http://"+a.listenerAddr("admin")+"/metrics")
	for _, want := range []string{
		`coordsidecar_requests_total{code="201",leg="outbound",target="http-proxy"} 2`,
		`coordsidecar_requests_total{code="503",leg="outbound",target="nowhere"} 1`,
		`coordsidecar_coordinator_connected 1`,
		`coordsidecar_request_duration_seconds_count{leg="outbound"} 3`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	servertest.Eventually(t, within, "every transaction to end", func() bool { return ts.Txns("").Total == 0 })
}
