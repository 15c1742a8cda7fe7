package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/docs/openapi"
	"github.com/coordinator/coordinator/security/adminauth"
)

// httpRule is one rule of admin_http.yaml (google.api.HttpRule).
type httpRule struct {
	Selector           string     `json:"selector"`
	Get                string     `json:"get"`
	Post               string     `json:"post"`
	Put                string     `json:"put"`
	Delete             string     `json:"delete"`
	Patch              string     `json:"patch"`
	AdditionalBindings []httpRule `json:"additional_bindings"`
}

// routes are the rule's method and path, and its additional bindings'.
func (r httpRule) routes() [][2]string {
	var out [][2]string
	for _, m := range [][2]string{{"get", r.Get}, {"post", r.Post}, {"put", r.Put}, {"delete", r.Delete}, {"patch", r.Patch}} {
		if m[1] != "" {
			out = append(out, m)
		}
	}
	for _, b := range r.AdditionalBindings {
		out = append(out, b.routes()...)
	}
	return out
}

// A running replica serves the OpenAPI document at /openapi.json: the
// committed one (generated, plus the hand-written /v1/session), with a real
// title, version and description, and an operation with a summary for
// every REST route: each of admin_http.yaml and /v1/session's, which the
// replica serves beside the gateway.
func TestOpenAPIServedWithEveryRESTRoute(t *testing.T) {
	ts := servertest.Start(t, "")
	resp, err := http.Get("http://" + ts.HTTPAddr() + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET /openapi.json: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	committed, err := os.ReadFile("../../docs/openapi/coordinator.swagger.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(openapi.Generated, committed) || !bytes.Equal(body.Bytes(), openapi.JSON) {
		t.Fatal("/openapi.json is not docs/openapi/coordinator.swagger.json with session.swagger.json")
	}
	// The generated part is served as generated: every path and definition
	// of coordinator.swagger.json is there, unchanged.
	var gen, served struct {
		Info        json.RawMessage            `json:"info"`
		Paths       map[string]json.RawMessage `json:"paths"`
		Definitions map[string]json.RawMessage `json:"definitions"`
	}
	if err := json.Unmarshal(committed, &gen); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(body.Bytes(), &served); err != nil {
		t.Fatal(err)
	}
	same := func(a, b json.RawMessage) bool {
		var x, y any
		return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
	}
	if !same(gen.Info, served.Info) {
		t.Errorf("info served %s, generated %s", served.Info, gen.Info)
	}
	for what, m := range map[string][2]map[string]json.RawMessage{"path": {gen.Paths, served.Paths}, "definition": {gen.Definitions, served.Definitions}} {
		for k, v := range m[0] {
			if !same(v, m[1][k]) {
				t.Errorf("generated %s %s is served changed or not at all", what, k)
			}
		}
	}

	var doc struct {
		Swagger string `json:"swagger"`
		Info    struct {
			Title, Version, Description string
		} `json:"info"`
		Paths map[string]map[string]struct {
			Summary     string `json:"summary"`
			Description string `json:"description"`
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Swagger != "2.0" {
		t.Errorf("swagger %q, want 2.0", doc.Swagger)
	}
	if doc.Info.Title == "" || strings.HasSuffix(doc.Info.Title, ".proto") {
		t.Errorf("title %q: want the API's name, not a file's", doc.Info.Title)
	}
	if doc.Info.Version == "" || doc.Info.Version == "version not set" {
		t.Errorf("version %q", doc.Info.Version)
	}
	if len(doc.Info.Description) < 40 {
		t.Errorf("description %q: want a real one", doc.Info.Description)
	}

	raw, err := os.ReadFile("../../proto/coordinator/v1/admin_http.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		HTTP struct {
			Rules []httpRule `json:"rules"`
		} `json:"http"`
	}
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.HTTP.Rules) < 10 {
		t.Fatalf("admin_http.yaml: %d rules read, the file has more", len(cfg.HTTP.Rules))
	}
	n := 0
	for _, r := range cfg.HTTP.Rules {
		method := r.Selector[strings.LastIndex(r.Selector, ".")+1:]
		rs := r.routes()
		if len(rs) == 0 {
			t.Errorf("rule %s has no route", r.Selector)
		}
		for _, rt := range rs {
			n++
			op, ok := doc.Paths[rt[1]][rt[0]]
			if !ok {
				t.Errorf("%s %s (%s) is not in /openapi.json", strings.ToUpper(rt[0]), rt[1], r.Selector)
				continue
			}
			if !strings.HasSuffix(op.OperationID, "_"+method) {
				t.Errorf("%s %s: operationId %q, want ..._%s", strings.ToUpper(rt[0]), rt[1], op.OperationID, method)
			}
			if op.Summary == "" && op.Description == "" {
				t.Errorf("%s %s: no description", strings.ToUpper(rt[0]), rt[1])
			}
		}
	}
	// The REST routes outside the gateway: the replica answers each (not
	// 404 or 405), and each is in the document with a description.
	for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		n++
		req, err := http.NewRequest(method, "http://"+ts.HTTPAddr()+adminauth.SessionPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %s; the test lists a route the replica does not serve", method, adminauth.SessionPath, resp.Status)
		}
		op, ok := doc.Paths[adminauth.SessionPath][strings.ToLower(method)]
		if !ok || op.Summary == "" || op.OperationID == "" {
			t.Errorf("%s %s is not in /openapi.json with an operationId and a summary: %+v", method, adminauth.SessionPath, op)
		}
	}
	// No path in the document that no route serves.
	if len(doc.Paths) != len(gen.Paths)+1 {
		t.Errorf("/openapi.json has %d paths: the %d generated and %s, want nothing else", len(doc.Paths), len(gen.Paths), adminauth.SessionPath)
	}
	t.Logf("%d REST routes, all in /openapi.json (%q %s)", n, doc.Info.Title, doc.Info.Version)
}
