package server_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
)

// coordinatord's HTTP listener serves the web view at /ui/ (and its REST
// routes, which the page reads, beside it).
func TestWebViewMounted(t *testing.T) {
	ts := servertest.Start(t, "")
	for path, want := range map[string]string{"/ui/": `<script src="app.js">`, "/ui/app.js": `const WATCH = "/v1/state:watch"`, "/ui/style.css": ".node"} {
		resp, err := http.Get("http://" + ts.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Fatalf("GET %s: %d, body lacks %q", path, resp.StatusCode, want)
		}
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get("http://" + ts.HTTPAddr() + "/ui")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /ui: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}
