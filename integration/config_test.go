package integration

import (
	"bufio"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// buildStamped builds a command of this module with the VCS information
// stamped (-buildvcs=true whatever GOFLAGS says) and returns the binary and
// what the toolchain recorded: the main module's version and vcs.revision
// ("" when the tree is not a git checkout Go recognises).
func buildStamped(t *testing.T, pkg string) (bin, version, revision string) {
	t.Helper()
	bin = filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-buildvcs=true", "-o", bin, "github.com/coordinator/coordinator/"+pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^\tmod\tgithub.com/coordinator/coordinator\t(\S+)`).FindSubmatch(out); m != nil {
		version = string(m[1])
	}
	if m := regexp.MustCompile(`(?m)^\tbuild\tvcs.revision=(\S+)`).FindSubmatch(out); m != nil {
		revision = string(m[1])
	}
	return bin, version, revision
}

// Both binaries say which build they are: the module version and the
// commit; coordinatord runs configured by COORDINATORD_* variables alone;
// coordctl reaches it through a --server list whose first replica is down.
func TestVersionsEnvironmentAndServerList(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs coordinatord and coordctl")
	}
	daemon, version, revision := buildStamped(t, "cmd/coordinatord")
	ctl, ctlVersion, ctlRevision := buildStamped(t, "cmd/coordctl")
	if version == "" || ctlVersion != version || ctlRevision != revision {
		t.Fatalf("recorded: coordinatord %q %q, coordctl %q %q", version, revision, ctlVersion, ctlRevision)
	}
	if st, err := os.Stat("../.git"); err == nil && st.IsDir() {
		head, err := exec.Command("git", "-C", "..", "rev-parse", "HEAD").Output()
		if err == nil && revision != strings.TrimSpace(string(head)) {
			t.Fatalf("a build in a git checkout recorded commit %q, HEAD is %s", revision, head)
		}
	}
	wantCommit := "commit unknown"
	if revision != "" {
		wantCommit = "commit " + revision
	}
	for _, c := range [][]string{{daemon, "--version"}, {ctl, "version"}, {ctl, "--version"}} {
		out, err := exec.Command(c[0], c[1:]...).Output()
		if err != nil {
			t.Fatalf("%s %s: %v", filepath.Base(c[0]), c[1], err)
		}
		line := string(out)
		if !strings.HasPrefix(line, filepath.Base(c[0])+" "+version+" (") || !strings.Contains(line, wantCommit) {
			t.Errorf("%s %s: %q, want the version %s and %s", filepath.Base(c[0]), c[1], line, version, wantCommit)
		}
		t.Logf("%s %s: %s", filepath.Base(c[0]), c[1], strings.TrimSpace(line))
	}

	// A typo: one line and a hint, exit status 2.
	out, err := exec.Command(daemon, "--bad-flag").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 ||
		string(out) != "coordinatord: unknown flag --bad-flag\nRun 'coordinatord --help' for usage.\n" {
		t.Fatalf("coordinatord --bad-flag: %v\n%s", err, out)
	}

	// Configured by the environment alone.
	cmd := exec.Command(daemon)
	cmd.Env = append(os.Environ(),
		"COORDINATORD_GRPC_ADDR=127.0.0.1:0", "COORDINATORD_HTTP_ADDR=127.0.0.1:0",
		"COORDINATORD_DATA_DIR="+t.TempDir(), "COORDINATORD_LOG_FORMAT=json", "COORDINATORD_LEADER_TTL=3s")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	leading := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		grpcAddr := ""
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			switch line["msg"] {
			case "serving":
				grpcAddr, _ = line["grpc_addr"].(string)
			case "leading":
				leading <- grpcAddr
			}
		}
	}()
	var addr string
	select {
	case addr = <-leading:
	case err := <-exited:
		t.Fatalf("coordinatord configured by the environment exited: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("coordinatord configured by the environment did not lead within a minute")
	}
	if addr == "" || strings.HasSuffix(addr, ":7400") {
		t.Fatalf("COORDINATORD_GRPC_ADDR not applied: serving on %q", addr)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	out, err = exec.Command(ctl, "--server", dead+","+addr, "cluster").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Answered by:  "+addr) {
		t.Fatalf("coordctl --server %s,%s cluster: %v\n%s", dead, addr, err, out)
	}
}
