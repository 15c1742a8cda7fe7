package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/docs/openapi"
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
// committed one, with a real title, version and description, and an
// operation with a summary for every REST route of admin_http.yaml.
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
	if !bytes.Equal(body.Bytes(), committed) || !bytes.Equal(openapi.JSON, committed) {
		t.Fatal("/openapi.json is not docs/openapi/coordinator.swagger.json")
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
	t.Logf("%d REST routes, all in /openapi.json (%q %s)", n, doc.Info.Title, doc.Info.Version)
}
