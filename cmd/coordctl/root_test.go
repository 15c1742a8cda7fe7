package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
)

// runCLI runs coordctl with args and returns the exit status and output.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// expectUsageError runs coordctl with args and wants a usage error (exit
// 2) whose stderr mentions msg.
func expectUsageError(t *testing.T, args []string, msg string) {
	t.Helper()
	if code, _, stderr := runCLI(args...); code != exitUsage || !strings.Contains(stderr, msg) {
		t.Errorf("coordctl %v: exit %d, stderr %q; want %d mentioning %q", args, code, stderr, exitUsage, msg)
	}
}

// portalProcServer starts a coordinator with a gateway that calls portal
// and proc, and a v1 and a v2 instance of each: the world of the set and
// lane commands' tests, and returns what runs coordctl against it.
func portalProcServer(t *testing.T) func(args ...string) (int, string, string) {
	t.Helper()
	ts := servertest.Start(t, "")
	ctl := func(args ...string) (int, string, string) {
		t.Helper()
		return runCLI(append([]string{"--server", ts.GRPCAddr()}, args...)...)
	}
	ts.LongSidecar("gw-1", "gateway", "v1", "portal", "proc")
	for _, svc := range []string{"portal", "proc"} {
		ts.LongSidecar(svc+"-1", svc, "v1")
		ts.LongSidecar(svc+"-2", svc, "v2")
	}
	return ctl
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the first line of stderr, after "Error: "
	}{
		{[]string{"-o", "yaml", "sessions"}, `unknown output format "yaml", must be one of: table, wide, json`},
		{[]string{"sessions", "--output=xml"}, `unknown output format "xml"`},
		{[]string{"freeness"}, "freeness: missing argument SERVICE"},
		{[]string{"freeness", ""}, "freeness: SERVICE must not be empty"},
		{[]string{"freeness", "a", "b"}, `freeness: unexpected argument "b"`},
		{[]string{"sessions", "x"}, `sessions: unexpected argument "x"`},
		{[]string{"freeness", "orders", "--limit", "-1"}, `invalid value "-1" for --limit: want a whole number, 0 or more`},
		{[]string{"txns", "--limit", "99999999999"}, `invalid value "99999999999" for --limit: out of range for uint32`},
		{[]string{"txns", "--timeout", "5"}, `invalid value "5" for --timeout: want a duration`},
		{[]string{"txns", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"txns", "--server", ""}, "--server must not be empty"},
		{[]string{"txns", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"fre"}, `unknown command "fre" for "coordctl" (did you mean freeness?)`},
		{[]string{"graph", "--dot", "-o", "json"}, "--dot and -o json cannot be used together"},
	} {
		code, stdout, stderr := runCLI(tc.args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d", tc.args, code, exitUsage)
		}
		if stdout != "" {
			t.Errorf("%q: wrote to stdout: %q", tc.args, stdout)
		}
		first, rest, _ := strings.Cut(stderr, "\n")
		if !strings.HasPrefix(first, "Error: ") || !strings.Contains(first, tc.want) {
			t.Errorf("%q: stderr %q, want Error: ...%s", tc.args, first, tc.want)
		}
		if !strings.Contains(rest, "--help' for usage.") {
			t.Errorf("%q: no usage hint in %q", tc.args, stderr)
		}
	}
}

func TestHelp(t *testing.T) {
	code, stdout, stderr := runCLI("--help")
	if code != exitOK || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	for _, cmd := range []string{"freeness", "graph", "sessions", "txns", "--server", "--output", "--timeout", serverEnv} {
		if !strings.Contains(stdout, cmd) {
			t.Errorf("help does not mention %s:\n%s", cmd, stdout)
		}
	}
	// No command at all prints the help too.
	if code, stdout2, _ := runCLI(); code != exitOK || stdout2 != stdout {
		t.Errorf("bare coordctl: exit %d, output differs from --help", code)
	}
}

func TestCommandsWellFormed(t *testing.T) {
	root := newRootCmd(&cli{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }})
	seen := map[string]bool{}
	for _, c := range root.Commands() {
		if c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		seen[c.Name()] = true
		if c.Args == nil || c.RunE == nil || c.Short == "" {
			t.Errorf("%s: want Args, RunE and Short", c.Name())
		}
	}
	for _, name := range []string{"freeness", "graph", "sessions", "txns", "services", "service", "history", "rollback", "update"} {
		if !seen[name] {
			t.Errorf("command %s not registered", name)
		}
	}
}

// globalsAfter parses args and returns the global options as the commands
// see them. The args must fail before any call is made.
func globalsAfter(t *testing.T, env map[string]string, args ...string) globalOptions {
	t.Helper()
	c := &cli{stdout: io.Discard, stderr: io.Discard, getenv: func(k string) string { return env[k] }}
	root := newRootCmd(c)
	root.SetArgs(args)
	if err := root.Execute(); !isUsageError(err) {
		t.Fatalf("%q: want a usage error before dialing, got %v", args, err)
	}
	return c.opts
}

func TestGlobalFlags(t *testing.T) {
	noCall := []string{"graph", "--dot", "-o", "json"}
	o := globalsAfter(t, nil, noCall...)
	if o.server != defaultServer || o.timeout != defaultTimeout || o.output != outputJSON {
		t.Errorf("defaults: %+v", o)
	}
	env := map[string]string{serverEnv: "coord.example:7400"}
	if o := globalsAfter(t, env, noCall...); o.server != "coord.example:7400" {
		t.Errorf("%s not applied: server %q", serverEnv, o.server)
	}
	args := append([]string{"--server", "other:1", "--timeout", "750ms"}, noCall...)
	if o := globalsAfter(t, env, args...); o.server != "other:1" || o.timeout != 750*time.Millisecond {
		t.Errorf("flags must win over the environment: %+v", o)
	}
}

func TestErrorMessage(t *testing.T) {
	c := &cli{opts: globalOptions{server: "127.0.0.1:7400", timeout: 5 * time.Second}}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{status.Error(codes.NotFound, `unknown service "nope"`), `unknown service "nope"`},
		{status.Error(codes.InvalidArgument, "limit 5000 is more than 1000"), "limit 5000 is more than 1000"},
		{fmt.Errorf("calling: %w", status.Error(codes.NotFound, "gone")), "gone"},
		{status.Error(codes.Unavailable, "connection refused"), "connection refused (server 127.0.0.1:7400)"},
		{status.Error(codes.DeadlineExceeded, "context deadline exceeded"), "context deadline exceeded (server 127.0.0.1:7400, timeout 5s)"},
		{status.Error(codes.Internal, ""), "Internal"},
		{fmt.Errorf("plain"), "plain"},
	} {
		if got := c.errorMessage(tc.err); got != tc.want {
			t.Errorf("errorMessage(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
