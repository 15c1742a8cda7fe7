package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/internal/buildinfo"
	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/tlsfiles"
)

// Defaults of the global flags.
const (
	defaultServer  = "127.0.0.1:7400"
	defaultTimeout = 5 * time.Second
	serverEnv      = "COORDCTL_SERVER"
	tokenEnv       = "COORDCTL_TOKEN"
	tlsCAEnv       = "COORDCTL_TLS_CA"
	tlsCertEnv     = "COORDCTL_TLS_CERT"
	tlsKeyEnv      = "COORDCTL_TLS_KEY"
	tlsNameEnv     = "COORDCTL_TLS_SERVER_NAME"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // a call or the output failed
	exitUsage = 2 // bad command, flag or argument
	// exitNotFree: freeness answered, and the service is not free (or did
	// not become free within --wait-timeout).
	exitNotFree = 3
)

// globalOptions are the root command's persistent flags.
type globalOptions struct {
	server  string // one address, or a comma-separated list of replicas
	output  outputFormat
	timeout time.Duration
	token   string // admin bearer token; empty: none sent
	// TLS to the coordinator (all empty: plaintext, as on loopback).
	tls        tlsfiles.Files
	serverName string
}

// cli is what every command shares: the global options and where to write.
type cli struct {
	opts   globalOptions
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	creds  credentials.TransportCredentials // from the TLS flags
	// tried are the servers the last call tried, in order: an error
	// names them.
	tried []string
}

// commandFactories are the subcommands; each command file adds its own from
// an init function, so adding a command is adding a file.
var commandFactories []func(*cli) *cobra.Command

// registerCommand adds a subcommand of coordctl.
func registerCommand(f func(*cli) *cobra.Command) {
	commandFactories = append(commandFactories, f)
}

// run executes coordctl with args (without the program name) and returns the
// exit status.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c := &cli{stdout: stdout, stderr: stderr, getenv: os.Getenv}
	root := newRootCmd(c)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var se statusError
	if errors.As(err, &se) {
		if se.err != nil {
			fmt.Fprintf(stderr, "Error: %s\n", c.errorMessage(se.err))
		}
		return se.code
	}
	fmt.Fprintf(stderr, "Error: %s\n", c.errorMessage(err))
	if isUsageError(err) {
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return exitUsage
	}
	return exitError
}

// newRootCmd builds the command tree.
func newRootCmd(c *cli) *cobra.Command {
	c.opts = globalOptions{server: defaultServer, output: outputTable, timeout: defaultTimeout}
	root := &cobra.Command{
		Use:   "coordctl",
		Short: "Operate the coordinator of version-consistent live updates",
		Long: `coordctl is the operators' client of the coordinator's admin API.

The coordinator is reached over gRPC at --server (default ` + defaultServer + `,
or $` + serverEnv + `): one address, or a comma-separated list of the
replicas of a cluster, tried in turn; a replica that cannot be reached or
answers Unavailable passes the call to the next. Use -o json for the
protojson form of any answer.

A coordinator with a token file wants a bearer token: --token, or
$` + tokenEnv + ` (kept out of the process list). Viewer tokens read; operator
tokens also start and abort updates and end self-preservation.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return c.completeGlobals(cmd)
		},
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	// --version, as `coordctl version` prints it.
	root.Version = buildinfo.Read().String()
	root.SetVersionTemplate("coordctl {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return usageError{plainFlagError(err)}
	})
	// Unknown subcommands are usage errors too.
	root.Args = func(_ *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], root.CommandPath())
		if s := root.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, ", "))
		}
		return usageError{errors.New(msg)}
	}
	root.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }

	pf := root.PersistentFlags()
	pf.StringVar(&c.opts.server, "server", defaultServer,
		"gRPC address of the coordinator, or a comma-separated list of replicas tried in turn (env "+serverEnv+")")
	pf.VarP(&c.opts.output, "output", "o", "output format: table, wide (every column, uncut) or json")
	pf.DurationVar(&c.opts.timeout, "timeout", defaultTimeout, "deadline of each call to the coordinator")
	pf.StringVar(&c.opts.token, "token", "",
		"admin bearer token sent with every call, when the coordinator has a token file (env "+tokenEnv+", which keeps it out of the process list)")
	pf.StringVar(&c.opts.tls.CA, "tls-ca", "", "CA bundle that verifies the coordinator's certificate: connect over TLS (env "+tlsCAEnv+")")
	pf.StringVar(&c.opts.tls.Cert, "tls-cert", "", "client certificate: its identity may give an admin role (--admin-identities) (env "+tlsCertEnv+")")
	pf.StringVar(&c.opts.tls.Key, "tls-key", "", "the client certificate's key (env "+tlsKeyEnv+")")
	pf.StringVar(&c.opts.serverName, "tls-server-name", "", "name to check in the coordinator's certificate (default: the host of --server; env "+tlsNameEnv+")")

	for _, f := range commandFactories {
		root.AddCommand(f(c))
	}
	return root
}

// completeGlobals applies the environment and checks the global flags.
func (c *cli) completeGlobals(cmd *cobra.Command) error {
	if !cmd.Flags().Changed("server") {
		if v := strings.TrimSpace(c.getenv(serverEnv)); v != "" {
			c.opts.server = v
		}
	}
	if !cmd.Flags().Changed("token") {
		c.opts.token = strings.TrimSpace(c.getenv(tokenEnv))
	}
	for _, f := range []struct {
		flag, env string
		v         *string
	}{{"tls-ca", tlsCAEnv, &c.opts.tls.CA}, {"tls-cert", tlsCertEnv, &c.opts.tls.Cert}, {"tls-key", tlsKeyEnv, &c.opts.tls.Key}, {"tls-server-name", tlsNameEnv, &c.opts.serverName}} {
		if !cmd.Flags().Changed(f.flag) {
			if v := strings.TrimSpace(c.getenv(f.env)); v != "" {
				*f.v = v
			}
		}
	}
	creds, err := tlsfiles.DialCredentials(c.opts.tls, c.opts.serverName)
	if err != nil {
		return usageErrorf("--tls-ca, --tls-cert, --tls-key: %v", err)
	}
	c.creds = creds
	if len(c.servers()) == 0 {
		return usageErrorf("--server must not be empty")
	}
	if c.opts.timeout <= 0 {
		return usageErrorf("--timeout must be positive, got %s", c.opts.timeout)
	}
	return nil
}

// servers are the addresses of --server, in order.
func (c *cli) servers() []string {
	var out []string
	for _, a := range strings.Split(c.opts.server, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// dialOptions are the options of every connection to the coordinator:
// TLS if the TLS flags name files, else plaintext, and the bearer token if
// one is set (--token, COORDCTL_TOKEN).
func (c *cli) dialOptions() []grpc.DialOption {
	creds := c.creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithUserAgent("coordctl"),
	}
	if c.opts.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(c.opts.token)))
	}
	return opts
}

// bearerToken sends "authorization: Bearer <token>" with every call. It
// does not insist on TLS: on loopback the coordinator is plaintext.
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return false }

// dialAddr opens a client connection to one replica. grpc.NewClient does
// not connect; the first call does.
func (c *cli) dialAddr(addr string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(addr, c.dialOptions()...)
	if err != nil {
		return nil, usageErrorf("invalid --server %q: %v", addr, err)
	}
	return conn, nil
}

// dial opens one client connection to the coordinator for a stream: over
// all the --server addresses, which gRPC's pick_first policy tries in
// order until one connects (a replica it cannot reach passes to the next).
// Unary calls go through callAdmin, which also moves on from a replica
// that answers Unavailable.
func (c *cli) dial() (*grpc.ClientConn, error) {
	addrs := c.servers()
	c.tried = addrs
	if len(addrs) == 1 {
		return c.dialAddr(addrs[0])
	}
	r := manual.NewBuilderWithScheme("coordctl")
	var st resolver.State
	for _, a := range addrs {
		st.Addresses = append(st.Addresses, resolver.Address{Addr: a})
	}
	r.InitialState(st)
	conn, err := grpc.NewClient(r.Scheme()+":///replicas", append(c.dialOptions(), grpc.WithResolvers(r))...)
	if err != nil {
		return nil, usageErrorf("invalid --server %q: %v", c.opts.server, err)
	}
	return conn, nil
}

// callAdmin makes one admin call under --timeout, to each --server address
// in turn until one answers: a replica that cannot be reached (no
// connection within --timeout, or refused) or that answers Unavailable (a
// follower that cannot reach the leader, one shutting down) passes the call
// to the next. Any other answer, an error included, is final.
func callAdmin[T any](c *cli, cmd *cobra.Command, call func(context.Context, coordinatorv1.AdminServiceClient) (T, error)) (T, error) {
	var zero T
	addrs := c.servers()
	c.tried = nil
	for i, addr := range addrs {
		conn, err := c.dialAddr(addr)
		if err != nil {
			return zero, err
		}
		c.tried = append(c.tried, addr)
		ctx, cancel := context.WithTimeout(cmd.Context(), c.opts.timeout)
		res, err := call(ctx, coordinatorv1.NewAdminServiceClient(conn))
		cancel()
		next := err != nil && i < len(addrs)-1 && cmd.Context().Err() == nil && passOn(err, conn)
		conn.Close()
		if !next {
			return res, err
		}
	}
	return zero, errors.New("no server") // not reached: completeGlobals wants one
}

// passOn reports whether a call's error means that the replica could not
// serve it, so another replica should be asked: Unavailable, or a deadline
// that passed before the connection was ever ready (an address that drops
// the packets).
func passOn(err error, conn *grpc.ClientConn) bool {
	switch status.Code(err) {
	case codes.Unavailable:
		return true
	case codes.DeadlineExceeded:
		return conn.GetState() != connectivity.Ready
	}
	return false
}

// errorMessage is what follows "Error: ". gRPC errors show the server's
// status message alone; when the coordinator could not be reached or did not
// answer in time, the address (and deadline) are added.
func (c *cli) errorMessage(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return err.Error()
	}
	st := se.GRPCStatus()
	msg := st.Message()
	if msg == "" {
		msg = st.Code().String()
	}
	servers := "server " + c.opts.server
	switch {
	case len(c.tried) == 1:
		servers = "server " + c.tried[0]
	case len(c.tried) > 1:
		servers = "servers " + strings.Join(c.tried, ", ")
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Sprintf("%s (%s)", msg, servers)
	case codes.DeadlineExceeded:
		return fmt.Sprintf("%s (%s, timeout %s)", msg, servers, c.opts.timeout)
	}
	return msg
}

// plainFlagError replaces the strconv/time parse error chain of a bad flag
// value with what the flag wants.
func plainFlagError(err error) error {
	var ive *pflag.InvalidValueError
	if !errors.As(err, &ive) {
		return err
	}
	f := ive.GetFlag()
	var want string
	switch f.Value.Type() {
	case "uint", "uint8", "uint16", "uint32", "uint64":
		want = "a whole number, 0 or more"
	case "int", "int8", "int16", "int32", "int64":
		want = "a whole number"
	case "duration":
		want = "a duration such as 500ms, 5s or 1m30s"
	case "bool":
		want = "true or false"
	default:
		return err
	}
	if errors.Is(err, strconv.ErrRange) {
		return fmt.Errorf("invalid value %q for --%s: out of range for %s", ive.GetValue(), f.Name, f.Value.Type())
	}
	return fmt.Errorf("invalid value %q for --%s: want %s", ive.GetValue(), f.Name, want)
}

// statusError ends coordctl with an exit status of its own; err, if set,
// is printed after "Error: " (nil: the output said it all).
type statusError struct {
	code int
	err  error
}

func (e statusError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e statusError) Unwrap() error { return e.err }

// usageError marks a bad command line: exit status 2 and a hint to --help.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, a ...any) error {
	return usageError{fmt.Errorf(format, a...)}
}

func isUsageError(err error) bool {
	var ue usageError
	return errors.As(err, &ue)
}

// exactArgs accepts exactly the named, non-empty positional arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < len(names) {
			missing := names[len(args):]
			return usageErrorf("%s: missing argument %s", cmd.Name(), strings.Join(missing, " "))
		}
		if len(args) > len(names) {
			return usageErrorf("%s: unexpected argument %q (usage: %s)", cmd.Name(), args[len(names)], cmd.UseLine())
		}
		for i, a := range args {
			if strings.TrimSpace(a) == "" {
				return usageErrorf("%s: %s must not be empty", cmd.Name(), names[i])
			}
		}
		return nil
	}
}

// noArgs rejects positional arguments.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%s: unexpected argument %q (usage: %s)", cmd.Name(), args[0], cmd.UseLine())
	}
	return nil
}
