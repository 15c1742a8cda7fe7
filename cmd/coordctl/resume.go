package main

import (
	"context"
	"io"
	"time"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerCommand(newResumeCmd) }

func newResumeCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "resume ID",
		Short: "Let a paused canary update move on by itself again",
		Long: `Resume the paused canary update ID: its current step's --step-interval
counts again from now.`,
		Example: `  coordctl resume 20261122T231839-6bc2b115`,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.Update, error) {
				return cl.ResumeUpdate(ctx, &coordinatorv1.ResumeUpdateRequest{Id: args[0]})
			})
			if err != nil {
				return err
			}
			return c.print(u, func(w io.Writer) error { return renderUpdate(w, u, time.Now()) })
		},
	}
}
