package main

import (
	"context"
	"io"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/strategy"
)

func init() { registerCommand(newUpdateCmd) }

func newUpdateCmd(c *cli) *cobra.Command {
	var (
		to, strat         string
		timeout, maxBlock time.Duration
		prepareTimeout    time.Duration
		watch             bool
	)
	cmd := &cobra.Command{
		Use:   "update SERVICE --to VERSION --strategy wf|bf|cv|naive",
		Short: "Update a service to a registered version without breaking transactions",
		Long: `Start updating SERVICE to VERSION (its instances must be registered).

Strategies: wf waits until no transaction may use both versions, then
switches (--timeout aborts it); bf also holds calls of transactions that have
not used the service until then (--max-block bounds a hold); cv switches at
once and keeps each transaction on the version it used first; naive switches
at once with no care (a baseline that breaks transactions).

With --watch it follows the update and exits 0 when it is DONE, 1 when it is
ABORTED or FAILED.`,
		Example: `  coordctl update auth-service --to v2 --strategy=cv --watch
  coordctl update auth-service --to v2 --strategy=wf --timeout 30s`,
		Args: exactArgs("SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return usageErrorf("--to VERSION is required")
			}
			k, err := strategy.Parse(strat)
			if err != nil {
				return usageErrorf("--strategy: %v", err)
			}
			if timeout < 0 || maxBlock < 0 || prepareTimeout < 0 {
				return usageErrorf("--timeout, --max-block and --prepare-timeout must not be negative")
			}
			req := &coordinatorv1.StartUpdateRequest{Service: args[0], ToVersion: to, Strategy: k,
				Timeout: durationpb.New(timeout), MaxBlock: durationpb.New(maxBlock),
				PrepareTimeout: durationpb.New(prepareTimeout)}
			u, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.Update, error) {
				return cl.StartUpdate(ctx, req)
			})
			if err != nil {
				return err
			}
			if !watch {
				return c.print(u, func(w io.Writer) error { return renderUpdate(w, u, time.Now()) })
			}
			return c.runWatch(cmd, u.GetId())
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "version to update to (required)")
	f.StringVar(&strat, "strategy", "", "wf, bf, cv or naive (required)")
	f.DurationVar(&timeout, "timeout", 0, "wf, bf: abort if the service is not free within this time (0: the server's --update-timeout, default 1h)")
	f.DurationVar(&maxBlock, "max-block", 0, "bf: abort when a call has been held this long (0: the server's default, 5s)")
	f.DurationVar(&prepareTimeout, "prepare-timeout", 0, "abort if sessions have not all acknowledged update mode within this time; the abort names them (0: the server's default, 2m)")
	f.BoolVar(&watch, "watch", false, "follow the update until it finishes")
	return cmd
}
