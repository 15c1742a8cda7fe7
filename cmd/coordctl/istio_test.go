package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// renderedDefault decodes rendered YAML strictly and returns the default
// route's subset and the header-matched subsets, in order.
func renderedDefault(t *testing.T, y string) (def string, pinned []string, ns string) {
	t.Helper()
	docs := strings.Split(y, "\n---\n")
	if len(docs) != 2 {
		t.Fatalf("%d documents:\n%s", len(docs), y)
	}
	var vs networkingv1.VirtualService
	var dr networkingv1.DestinationRule
	if err := yaml.UnmarshalStrict([]byte(docs[0]), &vs); err != nil {
		t.Fatalf("VirtualService: %v\n%s", err, y)
	}
	if err := yaml.UnmarshalStrict([]byte(docs[1]), &dr); err != nil {
		t.Fatalf("DestinationRule: %v\n%s", err, y)
	}
	for _, r := range vs.Spec.Http {
		if len(r.Match) == 0 {
			def = r.Route[0].Destination.Subset
		} else {
			pinned = append(pinned, r.Route[0].Destination.Subset)
		}
	}
	return def, pinned, vs.Namespace
}

// coordctl istio render and GET /v1/services/{service}/istio against a
// real coordinator, before and during a CV update: the default route
// follows the switch, the header routes keep both versions.
func TestIstioRender(t *testing.T) {
	ts := servertest.Start(t, "")
	ctl := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(append([]string{"--server", ts.GRPCAddr()}, args...)...)
	}
	portal := ts.LongSidecar("portal-1", "portal", "v1", "auth-service")
	ts.LongSidecar("auth-1", "auth-service", "v1")
	t1 := servertest.TxnID(1)
	servertest.Send(t, portal, simsidecar.Begin(t1, 1), simsidecar.Call(t1, 1, "auth-service", 2), simsidecar.Return(t1, 2))

	code, out, errOut := ctl("istio", "render", "auth-service", "--namespace", "shop")
	if code != exitOK {
		t.Fatalf("istio render: exit %d\n%s%s", code, out, errOut)
	}
	if def, pinned, ns := renderedDefault(t, out); def != "v1" || strings.Join(pinned, ",") != "v1" || ns != "shop" {
		t.Fatalf("before the update: default %s, pinned %v, namespace %q\n%s", def, pinned, ns, out)
	}

	ts.LongSidecar("auth-2", "auth-service", "v2")
	servertest.Eventually(t, 10*time.Second, "auth-2 to acknowledge its routing", func() bool {
		p, err := ts.Admin.DryRunUpdate(context.Background(), &coordinatorv1.StartUpdateRequest{Service: "auth-service",
			ToVersion: "v2", Strategy: coordinatorv1.Strategy_STRATEGY_CV})
		return err == nil && p.TargetAcknowledged == 1
	})
	if _, err := ts.Admin.StartUpdate(context.Background(), &coordinatorv1.StartUpdateRequest{Service: "auth-service",
		ToVersion: "v2", Strategy: coordinatorv1.Strategy_STRATEGY_CV}); err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, 20*time.Second, "the CV update to switch (t1 keeps it DRAINING)", func() bool {
		code, out, _ := ctl("istio", "render", "auth-service")
		def, _, _ := renderedDefault(t, out)
		return code == exitOK && def == "v2" && strings.Contains(out, "cv from v1 to v2, DRAINING")
	})
	_, out, _ = ctl("istio", "render", "auth-service")
	if _, pinned, _ := renderedDefault(t, out); strings.Join(pinned, ",") != "v1,v2" {
		t.Fatalf("draining: pinned %v\n%s", pinned, out)
	}

	// REST: YAML by default, JSON with ?format=json.
	resp, err := ts.HTTP.Get(ts.URL("/v1/services/auth-service/istio?namespace=shop"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/yaml" {
		t.Fatalf("GET istio: %d %s\n%s", resp.StatusCode, ct, body)
	}
	if def, _, ns := renderedDefault(t, string(body)); def != "v2" || ns != "shop" {
		t.Fatalf("GET istio: default %s namespace %q\n%s", def, ns, body)
	}
	resp, err = ts.HTTP.Get(ts.URL("/v1/services/auth-service/istio?format=json&host=auth.shop.svc.cluster.local"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "application/json" ||
		!bytes.Contains(body, []byte(`"kind": "List"`)) || !bytes.Contains(body, []byte(`"host": "auth.shop.svc.cluster.local"`)) {
		t.Fatalf("GET istio?format=json: %d %s\n%s", resp.StatusCode, ct, body)
	}
	if code, _, errOut := ctl("istio", "render", "auth-service", "-o", "json"); code != exitOK {
		t.Fatalf("-o json: exit %d %s", code, errOut)
	}

	// Refusals.
	if code, _, errOut := ctl("istio", "render", "nosuch"); code != exitError || !strings.Contains(errOut, `unknown service "nosuch"`) {
		t.Fatalf("unknown service: exit %d\n%s", code, errOut)
	}
	if code, _, _ := ctl("istio", "render", "auth-service", "-o", "table"); code != exitUsage {
		t.Fatalf("-o table: exit %d, want %d", code, exitUsage)
	}
	if code, _, errOut := ctl("istio", "render", "auth-service", "--namespace", "Not_A_Label"); code != exitError || !strings.Contains(errOut, "not a DNS-1123 label") {
		t.Fatalf("bad namespace: exit %d\n%s", code, errOut)
	}
	if ts.REST("/v1/services/auth-service/istio?format=xml", nil) != http.StatusBadRequest {
		t.Fatal("format=xml is not a bad request")
	}
}
