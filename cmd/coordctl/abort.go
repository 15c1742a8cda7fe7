package main

import (
	"context"
	"io"
	"time"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerCommand(newAbortCmd) }

func newAbortCmd(c *cli) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "abort ID",
		Short: "Abort an update that has not finished",
		Long: `Abort the update ID. Before its switch the service stays on the old
version and held calls go there; after a cv switch every transaction keeps
the version it used and new ones go back to the old version. In a canary
step likewise: new transactions go to the old version, those assigned the
new one finish there.`,
		Example: `  coordctl abort 20261122T231839-6bc2b115 --reason "v2 errors"`,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &coordinatorv1.AbortUpdateRequest{Id: args[0], Reason: reason}
			u, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.Update, error) {
				return cl.AbortUpdate(ctx, req)
			})
			if err != nil {
				return err
			}
			return c.print(u, func(w io.Writer) error { return renderUpdate(w, u, time.Now()) })
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded in the update's history)")
	return cmd
}
