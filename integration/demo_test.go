package integration

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestAuthDemo runs the demo program with the CV and BF strategies: under
// load, the update finishes with no failed request and no violation found by
// its checker, and the last line has the documented format. (NAIVE's
// violations depend on where the switch falls, so its deterministic
// counterpart is TestNaiveUpdateBreaksTransactions.)
func TestAuthDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo")
	}
	bin := buildBinary(t, "examples/authdemo")
	line := regexp.MustCompile(`^strategy=(\w+) requests=(\d+) failed=(\d+) violations=(\d+) update_ms=(\d+) p99_ms=([\d.]+)$`)
	for _, s := range []string{"cv", "bf"} {
		out, err := exec.Command(bin, "--strategy="+s, "--duration=2s", "--update-after=500ms").CombinedOutput()
		if err != nil {
			t.Fatalf("authdemo --strategy=%s: %v\n%s", s, err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		m := line.FindStringSubmatch(lines[len(lines)-1])
		if m == nil {
			t.Fatalf("authdemo --strategy=%s: last line %q does not match the format", s, lines[len(lines)-1])
		}
		if m[1] != s || m[2] == "0" || m[3] != "0" || m[4] != "0" {
			t.Fatalf("authdemo --strategy=%s: %s, want requests > 0, failed=0, violations=0\n%s", s, m[0], out)
		}
		if !strings.Contains(string(out), "of auth-service to v2 ("+s+"): DONE") {
			t.Fatalf("authdemo --strategy=%s: the update did not finish DONE:\n%s", s, out)
		}
	}
}

// TestAuthDemoSet runs the demo's set update (--set: Portal and Proc
// together, Proc v2 needing a field only Portal v2 sends) with CV and BF:
// no request fails (a mixed pair would), the checker sees no transaction
// on two versions of a service or on a mixed pair, and the update is DONE.
func TestAuthDemoSet(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo")
	}
	bin := buildBinary(t, "examples/authdemo")
	line := regexp.MustCompile(`^strategy=(\w+) requests=(\d+) failed=(\d+) violations=(\d+) update_ms=(\d+) p99_ms=([\d.]+)$`)
	for _, s := range []string{"cv", "bf"} {
		out, err := exec.Command(bin, "--set", "--strategy="+s, "--duration=2s", "--update-after=500ms").CombinedOutput()
		if err != nil {
			t.Fatalf("authdemo --set --strategy=%s: %v\n%s", s, err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		m := line.FindStringSubmatch(lines[len(lines)-1])
		if m == nil || m[1] != s || m[2] == "0" || m[3] != "0" || m[4] != "0" {
			t.Fatalf("authdemo --set --strategy=%s: last line %q, want the format with requests > 0, failed=0, violations=0\n%s", s, lines[len(lines)-1], out)
		}
		if !strings.Contains(string(out), "of portal+proc to v2 ("+s+"): DONE") {
			t.Fatalf("authdemo --set --strategy=%s: the set update did not finish DONE:\n%s", s, out)
		}
	}
}

// TestAuthDemoLane runs the demo's lane (--lane: half the requests tagged
// x-lane: gray, the lane holding auth-service at v2, promoted with CV and
// BF): no request fails, the checker sees no transaction on two versions
// of a service nor a tagged one off its lane's Auth, requests ran in the
// lane, and the promotion is DONE.
func TestAuthDemoLane(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo")
	}
	bin := buildBinary(t, "examples/authdemo")
	line := regexp.MustCompile(`^strategy=([\w-]+) requests=(\d+) failed=(\d+) violations=(\d+) update_ms=(\d+) p99_ms=([\d.]+)$`)
	served := regexp.MustCompile(`lane gray: (\d+) sub-requests served in it`)
	for _, s := range []string{"cv", "bf"} {
		out, err := exec.Command(bin, "--lane", "--strategy="+s, "--duration=2s", "--update-after=500ms").CombinedOutput()
		if err != nil {
			t.Fatalf("authdemo --lane --strategy=%s: %v\n%s", s, err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		m := line.FindStringSubmatch(lines[len(lines)-1])
		if m == nil || m[1] != "lane-"+s || m[2] == "0" || m[3] != "0" || m[4] != "0" {
			t.Fatalf("authdemo --lane --strategy=%s: last line %q, want the format with requests > 0, failed=0, violations=0\n%s", s, lines[len(lines)-1], out)
		}
		if !strings.Contains(string(out), "of auth-service to v2 (lane-"+s+"): DONE") {
			t.Fatalf("authdemo --lane --strategy=%s: the promotion did not finish DONE:\n%s", s, out)
		}
		if n := served.FindStringSubmatch(string(out)); n == nil || n[1] == "0" {
			t.Fatalf("authdemo --lane --strategy=%s: nothing ran in the lane:\n%s", s, out)
		}
	}
}
