package main

import (
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
)

// envPrefix starts the environment variable of every flag:
// COORDINATORD_MAX_LIVE_TXNS sets --max-live-txns.
const envPrefix = "COORDINATORD_"

// notFromEnv are the flags no environment variable sets: they are
// actions, not settings.
var notFromEnv = []string{"help", "version"}

// envName is the environment variable of the flag name.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// commandLine is what parseCommandLine read: which flags an environment
// variable set (a flag on the command line wins over its variable).
type commandLine struct {
	fromEnv map[string]string // flag name -> variable
}

// parseCommandLine parses args into fs, GNU style (--flag value,
// --flag=value), then sets every flag not on the command line from its
// environment variable, if set (lookup is os.LookupEnv). A bad flag or
// value is an error of one line that says what was wanted, with a
// suggestion for a misspelt flag; a bad variable's error names it.
// --help gives pflag.ErrHelp.
func parseCommandLine(fs *pflag.FlagSet, args []string, lookup func(string) (string, bool)) (*commandLine, error) {
	cl := &commandLine{fromEnv: map[string]string{}}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, pflag.ErrHelp
		}
		return nil, plainFlagError(fs, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (coordinatord takes flags only)", fs.Arg(0))
	}
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || slices.Contains(notFromEnv, f.Name) {
			return
		}
		name := envName(f.Name)
		v, ok := lookup(name)
		if !ok {
			return
		}
		if serr := fs.Set(f.Name, v); serr != nil {
			err = fmt.Errorf("$%s=%q: %s", name, v, want(f, serr))
			return
		}
		cl.fromEnv[f.Name] = name
	})
	return cl, err
}

// flagRef is a flag named in a message.
var flagRef = regexp.MustCompile(`--([a-z0-9][a-z0-9-]*)`)

// explain adds to msg, a complaint about flags, which of them an
// environment variable set.
func (cl *commandLine) explain(msg string) string {
	var vars []string
	for _, m := range flagRef.FindAllStringSubmatch(msg, -1) {
		if v, ok := cl.fromEnv[m[1]]; ok && !slices.Contains(vars, "$"+v) {
			vars = append(vars, "$"+v)
		}
	}
	if len(vars) == 0 {
		return msg
	}
	return fmt.Sprintf("%s (set by %s)", msg, strings.Join(vars, ", "))
}

// plainFlagError turns pflag's errors into one line that says what was
// wanted, and suggests the flag meant for an unknown one.
func plainFlagError(fs *pflag.FlagSet, err error) error {
	var ive *pflag.InvalidValueError
	if errors.As(err, &ive) {
		return fmt.Errorf("invalid value %q for --%s: %s", ive.GetValue(), ive.GetFlag().Name, want(ive.GetFlag(), err))
	}
	var nf *pflag.NotExistError
	if !errors.As(err, &nf) {
		return err
	}
	name := nf.GetSpecifiedName()
	if sh := nf.GetSpecifiedShortnames(); sh != "" {
		// -data-dir, Go flag style: pflag reads it as -d -a -t -a ...
		long := strings.TrimPrefix(sh, "-")
		if fs.Lookup(long) != nil {
			return fmt.Errorf("unknown flag -%s: long flags take two dashes (did you mean --%s?)", long, long)
		}
		return err
	}
	if s := suggest(fs, name); s != "" {
		return fmt.Errorf("unknown flag --%s (did you mean --%s?)", name, s)
	}
	return fmt.Errorf("unknown flag --%s", name)
}

// want says what the flag takes, for a value it could not read (err).
func want(f *pflag.Flag, err error) string {
	if errors.Is(err, strconv.ErrRange) {
		return "out of range for " + f.Value.Type()
	}
	switch f.Value.Type() {
	case "uint", "uint8", "uint16", "uint32", "uint64":
		return "want a whole number, 0 or more"
	case "int", "int8", "int16", "int32", "int64":
		return "want a whole number"
	case "float32", "float64":
		return "want a number"
	case "duration":
		return "want a duration such as 500ms, 5s or 1m30s"
	case "bool":
		return "want true or false"
	}
	return err.Error()
}

// suggest returns the flag closest to the unknown name, if one is close:
// within two edits, or (for four letters or more) a prefix of it or the
// other way round.
func suggest(fs *pflag.FlagSet, name string) string {
	best, bestD := "", 3
	fs.VisitAll(func(f *pflag.Flag) {
		d := editDistance(name, f.Name)
		if d > 2 && len(name) >= 4 && (strings.HasPrefix(f.Name, name) || strings.HasPrefix(name, f.Name)) {
			d = 2
		}
		if d < bestD {
			best, bestD = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// printUsage writes --help: the flags, each with its environment variable.
func printUsage(w io.Writer, fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if !slices.Contains(notFromEnv, f.Name) && !strings.Contains(f.Usage, envPrefix) {
			f.Usage += " (env " + envName(f.Name) + ")"
		}
	})
	fmt.Fprintf(w, `Usage: coordinatord [flags]

coordinatord runs a coordinator replica: an embedded etcd (or --etcd-endpoints),
the sidecar stream and admin API over gRPC, REST, /health, /metrics and
/openapi.json over HTTP.

On loopback (the default addresses) it serves plaintext. To listen beyond
loopback, give it --tls-cert and --tls-key (both listeners serve TLS with
them, re-read as they rotate) and --client-ca to require sidecars' client
certificates, or --insecure; --health-addr serves /health, /metrics and
gRPC health in plaintext for probes.

Every flag can also be set by its environment variable (shown after it);
a flag on the command line wins.

Flags:
%s`, fs.FlagUsages())
}
