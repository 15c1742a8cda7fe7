package main

import (
	"context"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerLaneCommand(newLanePromoteCmd) }

func newLanePromoteCmd(c *cli) *cobra.Command {
	var sf startFlags
	cmd := &cobra.Command{
		Use:   "promote NAME --strategy cv|wf|bf",
		Short: "Make a lane's versions the defaults (one set update), then delete the lane",
		Long: `Start one update of the set of the lane's members that do not run their
lane version by default already, to it, with the strategy given (as
coordctl update SERVICE=VERSION... does). The lane is deleted when the update
is DONE, and kept if it is aborted or fails. --watch follows the update.`,
		Example: `  coordctl lane promote gray --strategy=cv --watch`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := sf.check()
			if err != nil {
				return err
			}
			if k == coordinatorv1.Strategy_STRATEGY_UNSPECIFIED {
				return usageErrorf("--strategy is required: cv, wf or bf")
			}
			if sf.dryRun {
				return usageErrorf("lane promote: --dry-run is not supported")
			}
			req := sf.request("", "", k)
			u, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.Update, error) {
				return cl.PromoteLane(ctx, &coordinatorv1.PromoteLaneRequest{Name: args[0], Strategy: k,
					Timeout: req.Timeout, MaxBlock: req.MaxBlock, PrepareTimeout: req.PrepareTimeout})
			})
			if err != nil {
				return err
			}
			return c.showStarted(cmd, u, &sf)
		},
	}
	sf.add(cmd.Flags(), "cv, wf or bf (required)")
	return cmd
}
