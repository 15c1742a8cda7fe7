package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
)

// The REST gateway refuses what it would otherwise misread: a body over
// the limit (413, before decoding), an unknown field (400 naming it), a
// strategy it does not know (400); it takes strategy names as people type
// them.
func TestRESTDecodesStrictly(t *testing.T) {
	ts := servertest.Start(t, "")
	post := func(path, body string) (int, string) {
		t.Helper()
		resp, err := http.Post("http://"+ts.HTTPAddr()+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		name, body string
		code       int
		says       string
	}{
		{"unknown field", `{"toVersion":"v2","strategy":"cv","timout":"5s"}`, http.StatusBadRequest, `unknown field "timout"`},
		{"unknown strategy", `{"toVersion":"v2","strategy":"blue-green"}`, http.StatusBadRequest, "blue-green"},
		{"unspecified strategy", `{"toVersion":"v2","strategy":"STRATEGY_UNSPECIFIED"}`, http.StatusBadRequest, "strategy"},
		{"not JSON", `{"toVersion":`, http.StatusBadRequest, ""},
		// The strategy is read: what fails is the unknown service.
		{"cv", `{"toVersion":"v2","strategy":"cv"}`, http.StatusNotFound, `unknown service "nosuch"`},
		{"CV", `{"toVersion":"v2","strategy":"CV","timeout":"5s"}`, http.StatusNotFound, `unknown service "nosuch"`},
		{"STRATEGY_BF", `{"toVersion":"v2","strategy":"STRATEGY_BF"}`, http.StatusNotFound, `unknown service "nosuch"`},
		{"numeric", `{"toVersion":"v2","strategy":3}`, http.StatusNotFound, `unknown service "nosuch"`},
	} {
		code, body := post("/v1/services/nosuch/updates", tc.body)
		var e struct{ Message string }
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Errorf("%s: HTTP %d %s: not the gateway's error shape: %v", tc.name, code, body, err)
		}
		if code != tc.code || !strings.Contains(e.Message, tc.says) {
			t.Errorf("%s: HTTP %d %s; want %d saying %q", tc.name, code, body, tc.code, tc.says)
		}
	}

	big := `{"toVersion":"v2","strategy":"cv","pad":"` + strings.Repeat("x", server.DefaultMaxRequestBytes) + `"}`
	code, body := post("/v1/services/nosuch/updates", big)
	var e struct{ Message string }
	if code != http.StatusRequestEntityTooLarge || json.Unmarshal([]byte(body), &e) != nil || !strings.Contains(e.Message, "over 1048576 bytes") {
		t.Errorf("over the limit: HTTP %d %s; want 413 saying so", code, body)
	}
	// Without a Content-Length (chunked), the limit holds too.
	req, _ := http.NewRequest(http.MethodPost, "http://"+ts.HTTPAddr()+"/v1/services/nosuch/updates",
		io.MultiReader(bytes.NewReader([]byte(big))))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked over the limit: HTTP %d, want 413", resp.StatusCode)
	}
}
