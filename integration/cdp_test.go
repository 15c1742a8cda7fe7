package integration

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// A minimal Chrome DevTools Protocol client for the web view's test: it
// starts headless Chromium, attaches to its one page over the page's
// websocket and sends commands (evaluate, screenshot) one at a time,
// ignoring events.

// findChromium returns Chromium's path. Without it the test skips, saying
// how to install it; with CI=true (where .ci/run installs it) it fails.
func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is missing and CI=true: install chromium (apt-get install chromium); .ci/run does")
	}
	t.Skip("install chromium (apt-get install chromium) to run this test")
	return ""
}

type cdpPage struct {
	t    *testing.T
	ws   *websocket.Conn
	mu   sync.Mutex // one command at a time
	next int
}

var devtoolsRE = regexp.MustCompile(`DevTools listening on (ws://[^/\s]+)/`)

// startChromium runs headless Chromium on url and connects to its page.
// The browser (its whole process group) is killed when the test ends.
func startChromium(t *testing.T, bin, url string) *cdpPage {
	t.Helper()
	profile := t.TempDir()
	cmd := exec.Command(bin, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio",
		"--remote-debugging-port=0", "--remote-allow-origins=*", "--user-data-dir="+profile,
		"--window-size=1280,1000", url)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	found := make(chan string, 1)
	var logMu sync.Mutex
	var log strings.Builder
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logMu.Lock()
			if log.Len() < 64<<10 {
				log.WriteString(sc.Text() + "\n")
			}
			logMu.Unlock()
			if m := devtoolsRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		_ = cmd.Wait()
	}()
	var wsBase string
	select {
	case wsBase = <-found:
	case <-exited:
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("chromium exited before listening:\n%s", log.String())
	case <-time.After(60 * time.Second):
		logMu.Lock()
		defer logMu.Unlock()
		t.Fatalf("chromium did not print its DevTools address within a minute:\n%s", log.String())
	}
	httpBase := "http://" + strings.TrimPrefix(wsBase, "ws://")

	// The page target for url; it may take a moment to appear.
	var pageWS string
	deadline := time.Now().Add(30 * time.Second)
	for pageWS == "" {
		var targets []struct{ Type, URL, WebSocketDebuggerURL string }
		resp, err := http.Get(httpBase + "/json/list")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			_ = json.Unmarshal(body, &targets)
		}
		for _, tg := range targets {
			if tg.Type == "page" && tg.WebSocketDebuggerURL != "" {
				pageWS = tg.WebSocketDebuggerURL
			}
		}
		if pageWS == "" {
			if time.Now().After(deadline) {
				t.Fatalf("no page target at %s/json/list: %v %+v", httpBase, err, targets)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	ws, _, err := websocket.DefaultDialer.Dial(pageWS, nil)
	if err != nil {
		t.Fatalf("connect to the page %s: %v", pageWS, err)
	}
	t.Cleanup(func() { ws.Close() })
	ws.SetReadLimit(64 << 20) // screenshots
	return &cdpPage{t: t, ws: ws}
}

// call sends one command and returns its result, skipping events.
func (p *cdpPage) call(method string, params any, result any) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	id := p.next
	_ = p.ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := p.ws.WriteJSON(map[string]any{"id": id, "method": method, "params": params}); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	_ = p.ws.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		var msg struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := p.ws.ReadJSON(&msg); err != nil {
			return fmt.Errorf("%s: %w", method, err)
		}
		if msg.ID != id {
			continue // an event, or the answer to an abandoned command
		}
		if msg.Error != nil {
			return fmt.Errorf("%s: %d %s", method, msg.Error.Code, msg.Error.Message)
		}
		if result == nil {
			return nil
		}
		return json.Unmarshal(msg.Result, result)
	}
}

// eval evaluates a JavaScript expression in the page and decodes its
// (JSON-serialisable) value into out.
func (p *cdpPage) eval(expr string, out any) error {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text      string `json:"text"`
			Exception *struct {
				Description string `json:"description"`
			} `json:"exception"`
		} `json:"exceptionDetails"`
	}
	if err := p.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &res); err != nil {
		return err
	}
	if e := res.ExceptionDetails; e != nil {
		if e.Exception != nil {
			return fmt.Errorf("evaluate %q: %s", expr, e.Exception.Description)
		}
		return fmt.Errorf("evaluate %q: %s", expr, e.Text)
	}
	if out == nil || len(res.Result.Value) == 0 {
		return nil
	}
	return json.Unmarshal(res.Result.Value, out)
}

// mustEval is eval that fails the test.
func (p *cdpPage) mustEval(expr string, out any) {
	p.t.Helper()
	if err := p.eval(expr, out); err != nil {
		p.t.Fatal(err)
	}
}

// waitFor evaluates expr (a boolean) until it is true, failing after within.
func (p *cdpPage) waitFor(within time.Duration, what, expr string) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	var lastErr error
	for {
		var ok bool
		if lastErr = p.eval(expr, &ok); lastErr == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			var status string
			_ = p.eval(`document.getElementById("status") ? document.getElementById("status").textContent : ""`, &status)
			p.t.Fatalf("page: %s not seen within %v (last error %v; status %q)", what, within, lastErr, status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// screenshot saves a PNG of the page under dir and logs its path.
func (p *cdpPage) screenshot(dir, name string) string {
	p.t.Helper()
	var res struct {
		Data string `json:"data"`
	}
	if err := p.call("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &res); err != nil {
		p.t.Fatal(err)
	}
	png, err := base64.StdEncoding.DecodeString(res.Data)
	if err != nil || len(png) < 8 || string(png[1:4]) != "PNG" {
		p.t.Fatalf("screenshot %s: not a PNG (%d bytes, %v)", name, len(png), err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot %s: %s (%d bytes)", name, path, len(png))
	return path
}
