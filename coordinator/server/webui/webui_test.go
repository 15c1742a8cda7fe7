package webui

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Result()
}

// The page, its script and its style are served from the binary with
// their types; anything else is a 404, and only GET and HEAD are answered.
func TestHandlerServesEmbeddedAssets(t *testing.T) {
	h := Handler()
	for path, typ := range map[string]string{
		"/ui/": "text/html", "/ui/app.js": "text/javascript", "/ui/style.css": "text/css",
	} {
		resp := get(t, h, http.MethodGet, path)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), typ) || len(body) == 0 {
			t.Fatalf("GET %s: %d %q, %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Fatalf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	index := get(t, h, http.MethodGet, "/ui/")
	body, _ := io.ReadAll(index.Body)
	for _, want := range []string{`<script src="app.js">`, `href="style.css"`, `id="graph"`, `id="updates"`, `id="cluster"`} {
		if !strings.Contains(string(body), want) {
			t.Fatalf("index.html lacks %q", want)
		}
	}
	if resp := get(t, h, http.MethodGet, "/ui"); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /ui: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := get(t, h, http.MethodGet, "/ui/nosuch.js"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /ui/nosuch.js: %d", resp.StatusCode)
	}
	if resp := get(t, h, http.MethodPost, "/ui/"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /ui/: %d", resp.StatusCode)
	}
	if resp := get(t, h, http.MethodHead, "/ui/app.js"); resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD /ui/app.js: %d", resp.StatusCode)
	}
}

// The view works offline: no asset loads anything from another origin, and
// the script talks only to the coordinator's own REST gateway.
func TestAssetsAreSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	err := fs.WalkDir(assets, "assets", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := assets.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range external.FindAllString(string(data), -1) {
			if m != "http://www.w3.org" { // the SVG namespace, a name, not a fetch
				t.Errorf("%s refers to %s", path, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := assets.ReadFile("assets/app.js")
	for _, m := range regexp.MustCompile("(?:fetch|post)\\(\\s*[`\"]([^`\"]*)").FindAllStringSubmatch(string(js), -1) {
		if !strings.HasPrefix(m[1], "/v1/") {
			t.Errorf("app.js calls %q, not the REST gateway", m[1])
		}
	}
	// The state comes from the stream, not from polling.
	if !strings.Contains(string(js), `const WATCH = "/v1/state:watch"`) || strings.Contains(string(js), "setInterval") {
		t.Error("app.js does not read its state from GET /v1/state:watch, or polls")
	}
}
