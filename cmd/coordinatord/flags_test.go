package main

import (
	"bytes"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/coordinator/coordinator/internal/buildinfo"
)

// A mistyped command line gets one line that says what is wrong, with a
// suggestion when a flag is close, and a hint to --help: not the usage.
func TestCommandLineErrorsAreOneLineAndAHint(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--bad-flag"}, "coordinatord: unknown flag --bad-flag"},
		{[]string{"--max-live-txn", "5"}, "coordinatord: unknown flag --max-live-txn (did you mean --max-live-txns?)"},
		{[]string{"--leader-tt=3s"}, "coordinatord: unknown flag --leader-tt (did you mean --leader-ttl?)"},
		{[]string{"-data-dir", "x"}, "coordinatord: unknown flag -data-dir: long flags take two dashes (did you mean --data-dir?)"},
		{[]string{"--max-live-txns", "lots"}, `coordinatord: invalid value "lots" for --max-live-txns: want a whole number`},
		{[]string{"--leader-ttl", "5"}, `coordinatord: invalid value "5" for --leader-ttl: want a duration such as 500ms, 5s or 1m30s`},
		{[]string{"--default-misses=-1"}, `coordinatord: invalid value "-1" for --default-misses: want a whole number, 0 or more`},
		{[]string{"--data-dir"}, "coordinatord: flag needs an argument: --data-dir"},
		{[]string{"serve"}, `coordinatord: unexpected argument "serve" (coordinatord takes flags only)`},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code != 2 {
			t.Errorf("%q: exit %d, want 2", tc.args, code)
		}
		lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
		if len(lines) != 2 || lines[0] != tc.want || lines[1] != "Run 'coordinatord --help' for usage." || stdout.Len() != 0 {
			t.Errorf("%q: stderr\n%s\nwant\n%s\nRun 'coordinatord --help' for usage.", tc.args, stderr.String(), tc.want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--help"}, &stdout, &stderr); code != 0 || stderr.Len() != 0 {
		t.Fatalf("--help: exit %d, stderr %q", code, stderr.String())
	}
	help := stdout.String()
	// Every flag is listed with its environment variable.
	flagLine := regexp.MustCompile(`(?m)^\s+--([a-z0-9-]+)\b.*$`)
	n := 0
	for _, m := range flagLine.FindAllStringSubmatch(help, -1) {
		n++
		if m[1] == "help" || m[1] == "version" {
			continue
		}
		if !strings.Contains(m[0], "(env "+envName(m[1])+")") {
			t.Errorf("--help: --%s without its variable %s: %s", m[1], envName(m[1]), m[0])
		}
	}
	if n < 30 {
		t.Errorf("--help lists %d flags:\n%s", n, help)
	}
	stdout.Reset()
	if code := run([]string{"--version"}, &stdout, &stderr); code != 0 || stdout.String() != "coordinatord "+buildinfo.Read().String()+"\n" {
		t.Fatalf("--version: exit %d, %q", code, stdout.String())
	}
}

// Every flag is read from COORDINATORD_<NAME> when the command line does
// not give it; the command line wins; a bad value names the variable.
func TestFlagsFromTheEnvironment(t *testing.T) {
	newSet := func() (*pflag.FlagSet, *string, *time.Duration, *int, *uint, *float64, *bool, *int64, *bool) {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		return fs, fs.String("data-dir", "d", ""), fs.Duration("leader-ttl", 5*time.Second, ""), fs.Int("max-live-txns", 1, ""),
			fs.Uint("default-misses", 2, ""), fs.Float64("max-events-per-second", 1, ""), fs.Bool("feature", false, ""),
			fs.Int64("max-request-bytes", 1, ""), fs.Bool("version", false, "")
	}
	env := map[string]string{
		"COORDINATORD_DATA_DIR": "/var/lib/c", "COORDINATORD_LEADER_TTL": "7s", "COORDINATORD_MAX_LIVE_TXNS": "42",
		"COORDINATORD_DEFAULT_MISSES": "3", "COORDINATORD_MAX_EVENTS_PER_SECOND": "2.5", "COORDINATORD_FEATURE": "true",
		"COORDINATORD_MAX_REQUEST_BYTES": "4096", "COORDINATORD_VERSION": "true",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	fs, dir, ttl, txns, misses, rate, feature, body, version := newSet()
	cl, err := parseCommandLine(fs, []string{"--max-live-txns=9", "--leader-ttl", "11s"}, lookup)
	if err != nil {
		t.Fatal(err)
	}
	if *dir != "/var/lib/c" || *misses != 3 || *rate != 2.5 || !*feature || *body != 4096 {
		t.Errorf("from the environment: %q %d %v %v %d", *dir, *misses, *rate, *feature, *body)
	}
	if *txns != 9 || *ttl != 11*time.Second {
		t.Errorf("the command line must win: --max-live-txns %d, --leader-ttl %v", *txns, *ttl)
	}
	if *version {
		t.Error("COORDINATORD_VERSION must not act as --version")
	}
	if got := cl.explain("--data-dir x and --max-live-txns y"); got != "--data-dir x and --max-live-txns y (set by $COORDINATORD_DATA_DIR)" {
		t.Errorf("explain: %q", got)
	}

	for name, want := range map[string]string{
		"COORDINATORD_MAX_LIVE_TXNS":  `$COORDINATORD_MAX_LIVE_TXNS="many": want a whole number`,
		"COORDINATORD_LEADER_TTL":     `$COORDINATORD_LEADER_TTL="many": want a duration such as 500ms, 5s or 1m30s`,
		"COORDINATORD_DEFAULT_MISSES": `$COORDINATORD_DEFAULT_MISSES="many": want a whole number, 0 or more`,
		"COORDINATORD_FEATURE":        `$COORDINATORD_FEATURE="many": want true or false`,
	} {
		fs, _, _, _, _, _, _, _, _ := newSet()
		_, err := parseCommandLine(fs, nil, func(k string) (string, bool) { return "many", k == name })
		if err == nil || err.Error() != want {
			t.Errorf("%s=many: %v, want %s", name, err, want)
		}
	}
}

// Through run: the variables reach the settings, a flag on the command
// line wins, and a setting refused names the variable that set it.
func TestRunReadsTheEnvironment(t *testing.T) {
	t.Setenv("COORDINATORD_LEADER_TTL", "10s")
	t.Setenv("COORDINATORD_MIN_SESSION_TTL", "6s")
	var stderr bytes.Buffer
	if code := run(nil, io.Discard, &stderr); code != 2 ||
		stderr.String() != "coordinatord: --min-session-ttl 6s is shorter than --leader-ttl 10s: sidecars would expire during every failover (set by $COORDINATORD_MIN_SESSION_TTL, $COORDINATORD_LEADER_TTL)\n" {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	// --leader-ttl on the command line wins; the next check fails instead.
	t.Setenv("COORDINATORD_MAX_LIVE_TXNS", "0")
	stderr.Reset()
	if code := run([]string{"--leader-ttl", "4s"}, io.Discard, &stderr); code != 2 ||
		stderr.String() != "coordinatord: --max-live-txns 0: want a positive number (set by $COORDINATORD_MAX_LIVE_TXNS)\n" {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	t.Setenv("COORDINATORD_GC_PERCENT", "0") // not GOGC: checked like the flag
	stderr.Reset()
	if code := run(nil, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "--gc-percent 0: want a positive percentage") ||
		!strings.Contains(stderr.String(), "(set by $COORDINATORD_GC_PERCENT)") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

func TestSuggest(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	for _, n := range []string{"max-live-txns", "max-live-txns-per-session", "data-dir", "leader-ttl"} {
		fs.String(n, "", "")
	}
	for in, want := range map[string]string{
		"max-live-txn": "max-live-txns", "datadir": "data-dir", "leader": "leader-ttl",
		"max-live-txns-per-sesion": "max-live-txns-per-session", "zzz": "", "grpc": "",
	} {
		if got := suggest(fs, in); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}
