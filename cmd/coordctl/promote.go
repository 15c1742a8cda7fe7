package main

import (
	"context"
	"io"
	"time"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerCommand(newPromoteCmd) }

func newPromoteCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "promote ID",
		Short: "Move a canary update to its next step",
		Long: `Move the canary update ID to its next step: the next weight, or, from the
step before the last (100), the switch: the default becomes the new version
and the update goes on as cv, draining the old one. Transactions keep the
version they were assigned.`,
		Example: `  coordctl promote 20261122T231839-6bc2b115`,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.Update, error) {
				return cl.PromoteUpdate(ctx, &coordinatorv1.PromoteUpdateRequest{Id: args[0]})
			})
			if err != nil {
				return err
			}
			return c.print(u, func(w io.Writer) error { return renderUpdate(w, u, time.Now()) })
		},
	}
}
