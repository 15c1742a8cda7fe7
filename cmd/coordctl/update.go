package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/durationpb"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/strategy"
)

func init() { registerCommand(newUpdateCmd) }

func newUpdateCmd(c *cli) *cobra.Command {
	var (
		to string
		sf startFlags
		cf canaryFlags
	)
	cmd := &cobra.Command{
		Use:   "update SERVICE [--to VERSION] | SERVICE=VERSION... --strategy wf|bf|cv|naive",
		Short: "Update a service, or a set of services together, to registered versions without breaking transactions",
		Long: `Start updating SERVICE to VERSION (its instances must be registered).
Without --to, VERSION is the one registered version of SERVICE that is not
its default; when there is none or more than one, coordctl lists them and
exits 2.

With SERVICE=VERSION arguments (one or more) the services move together, as
one update with one id: every transaction runs either entirely on their old
versions or entirely on their new ones (wf and bf switch the set when no
transaction that used one of them may still call one; cv keeps each
transaction on the side of the set it used first). A service of the set
must not be in another running update.

Strategies: wf waits until no transaction may use both versions, then
switches (--timeout aborts it); bf also holds calls of transactions that have
not used the service until then (--max-block bounds a hold); cv switches at
once and keeps each transaction on the version it used first; naive switches
at once with no care (a baseline that breaks transactions).

--canary 5,25,50,100 runs cv with weights: the default stays the old
version and each transaction new to SERVICE is assigned the new one with the
current step's weight, then stays where it was assigned; the last step (100)
is the switch. Steps move on every --step-interval, or with --manual by
coordctl promote ID; coordctl pause/resume ID stop and restart that, coordctl
abort ID rolls back. --max-error-rate and --max-p99 abort it when the new
version does worse than the old one over --analysis-window. A canary of a
set assigns each transaction the whole set at its first use of any member,
and judges the set over all members' outcomes.

--dry-run says what would happen now and starts nothing: whether the update
would be refused, the target's instances, whether the service is free or
which transactions block it, and what the strategy would wait for (exit 1
when it would be refused).

With --watch (-w) it prints the update's id, then follows it, and exits 0
when it is DONE, 1 when it is ABORTED or FAILED or when --watch-timeout
passes first (the update goes on: Ctrl-C and --watch-timeout stop the
watching, coordctl abort ID stops the update).`,
		Example: `  coordctl update auth-service --strategy=cv
  coordctl update auth-service --to v2 --strategy=cv --canary 5,25,50,100 --step-interval 1m --max-error-rate 0.05
  coordctl update portal=v2 proc=v2 --strategy=wf --watch
  coordctl update portal=v2 proc=v2 --strategy=cv --canary 10,50,100 --manual
  coordctl update auth-service --to v2 --strategy=cv --watch
  coordctl update auth-service --to v2 --strategy=wf --timeout 30s --dry-run`,
		Args: func(cmd *cobra.Command, args []string) error {
			_, _, err := setArgs(args, to)
			return err
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := sf.check()
			if err != nil {
				return err
			}
			if k == coordinatorv1.Strategy_STRATEGY_UNSPECIFIED {
				return usageErrorf("--strategy is required: wf, bf, cv or naive")
			}
			if members, set, _ := setArgs(args, to); set {
				if sf.dryRun {
					return usageErrorf("--dry-run takes one SERVICE, not a set")
				}
				req := sf.request("", "", k)
				req.Members = members
				if err := cf.apply(req); err != nil {
					return err
				}
				return c.startUpdate(cmd, req, &sf)
			}
			if to == "" {
				s, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.ServiceState, error) {
					return cl.GetService(ctx, &coordinatorv1.GetServiceRequest{Service: args[0], InstanceLimit: 1, TxnLimit: 1})
				})
				if err != nil {
					return err
				}
				if to, err = soleOtherVersion(s); err != nil {
					return err
				}
			}
			req := sf.request(args[0], to, k)
			if err := cf.apply(req); err != nil {
				return err
			}
			return c.startUpdate(cmd, req, &sf)
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "version to update to (default: the one registered version that is not the default)")
	sf.add(cmd.Flags(), "wf, bf, cv or naive (required)")
	cf.add(cmd.Flags())
	return cmd
}

// soleOtherVersion is the version an update without --to goes to: the one
// version of s with a registered instance that is not its default. None or
// several is a usage error that lists the registered versions.
func soleOtherVersion(s *coordinatorv1.ServiceState) (string, error) {
	var others []string
	for _, v := range s.GetVersions() {
		if v.GetInstances() > 0 && !v.GetDefault() {
			others = append(others, v.GetVersion())
		}
	}
	if len(others) == 1 {
		return others[0], nil
	}
	name, def := s.GetName(), s.GetDefaultVersion()
	if len(others) == 0 {
		return "", usageErrorf("--to VERSION is needed: %s has no registered version other than its default %s (registered: %s); register the new version first",
			name, def, registeredVersions(s))
	}
	return "", usageErrorf("--to VERSION is needed: %s has %d registered versions other than its default %s (registered: %s); pick one with --to",
		name, len(others), def, registeredVersions(s))
}

// registeredVersions lists the versions of s with instances: "v1 (default,
// 2 instances), v2 (1 instance)", or "none".
func registeredVersions(s *coordinatorv1.ServiceState) string {
	var parts []string
	for _, v := range s.GetVersions() {
		if v.GetInstances() == 0 {
			continue
		}
		what := plural(int(v.GetInstances()), "instance", "instances")
		if v.GetDefault() {
			what = "default, " + what
		}
		parts = append(parts, fmt.Sprintf("%s (%s)", v.GetVersion(), what))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// startFlags are the flags of the commands that start an update (update,
// rollback).
type startFlags struct {
	strat                             string
	timeout, maxBlock, prepareTimeout time.Duration
	watch                             bool
	watchTimeout                      time.Duration
	dryRun                            bool
}

func (sf *startFlags) add(f *pflag.FlagSet, strategyUsage string) {
	f.StringVar(&sf.strat, "strategy", "", strategyUsage)
	f.DurationVar(&sf.timeout, "timeout", 0, "wf, bf: abort if the service is not free within this time (0: the server's --update-timeout, default 1h)")
	f.DurationVar(&sf.maxBlock, "max-block", 0, "bf: abort when a call has been held this long (0: the server's default, 5s)")
	f.DurationVar(&sf.prepareTimeout, "prepare-timeout", 0, "abort if sessions have not all acknowledged update mode within this time; the abort names them (0: the server's default, 2m)")
	f.BoolVarP(&sf.watch, "watch", "w", false, "print the update's id, then follow it until it finishes")
	f.DurationVar(&sf.watchTimeout, "watch-timeout", 0, "with --watch: stop watching after this long, exit 1 (the update goes on; 0: until it finishes)")
	f.BoolVar(&sf.dryRun, "dry-run", false, "say what would happen now; start nothing")
}

// check validates the flags; an empty --strategy is left to the caller
// (rollback has a default) and returned as STRATEGY_UNSPECIFIED.
func (sf *startFlags) check() (coordinatorv1.Strategy, error) {
	if sf.timeout < 0 || sf.maxBlock < 0 || sf.prepareTimeout < 0 || sf.watchTimeout < 0 {
		return 0, usageErrorf("--timeout, --max-block, --prepare-timeout and --watch-timeout must not be negative")
	}
	if sf.dryRun && sf.watch {
		return 0, usageErrorf("--dry-run and --watch cannot be used together: a dry run starts nothing to watch")
	}
	if sf.watchTimeout > 0 && !sf.watch {
		return 0, usageErrorf("--watch-timeout needs --watch")
	}
	if sf.strat == "" {
		return coordinatorv1.Strategy_STRATEGY_UNSPECIFIED, nil
	}
	k, err := strategy.Parse(sf.strat)
	if err != nil {
		return 0, usageErrorf("--strategy: %v", err)
	}
	return k, nil
}

func (sf *startFlags) request(service, to string, k coordinatorv1.Strategy) *coordinatorv1.StartUpdateRequest {
	return &coordinatorv1.StartUpdateRequest{Service: service, ToVersion: to, Strategy: k,
		Timeout: durationpb.New(sf.timeout), MaxBlock: durationpb.New(sf.maxBlock),
		PrepareTimeout: durationpb.New(sf.prepareTimeout)}
}

// startUpdate runs req as the flags say: a dry run, or a start that is
// printed or watched.
func (c *cli) startUpdate(cmd *cobra.Command, req *coordinatorv1.StartUpdateRequest, sf *startFlags) error {
	if sf.dryRun {
		plan, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.UpdatePlan, error) {
			return cl.DryRunUpdate(ctx, req)
		})
		if err != nil {
			return err
		}
		if err := c.print(plan, func(w io.Writer) error { return renderPlan(w, plan, c.wide(), time.Now()) }); err != nil {
			return err
		}
		if !plan.GetWouldStart() {
			return fmt.Errorf("the update would be refused: %s", plan.GetRefused())
		}
		return nil
	}
	u, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.Update, error) {
		return cl.StartUpdate(ctx, req)
	})
	if err != nil {
		return err
	}
	return c.showStarted(cmd, u, sf)
}

// showStarted prints the update u just started, or (--watch) its id and
// then its progress until it finishes.
func (c *cli) showStarted(cmd *cobra.Command, u *coordinatorv1.Update, sf *startFlags) error {
	if !sf.watch {
		return c.print(u, func(w io.Writer) error { return renderUpdate(w, u, time.Now()) })
	}
	// The id first: after Ctrl-C, or past --watch-timeout, the operator
	// knows what to abort.
	if c.opts.output == outputJSON {
		if err := writeJSONLine(c.stdout, u); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.stdout, "Update %s started: %s (%s).\n", u.GetId(), updateServices(u), strategyName(u.GetStrategy()))
		fmt.Fprintf(c.stdout, "Ctrl-C stops watching, not the update; coordctl abort %s stops it.\n", u.GetId())
	}
	return c.runWatch(cmd, u.GetId(), sf.watchTimeout)
}
