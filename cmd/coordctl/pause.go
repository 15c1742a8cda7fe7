package main

import (
	"context"
	"io"
	"time"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerCommand(newPauseCmd) }

func newPauseCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "pause ID",
		Short: "Stop a canary update from moving to its next step by itself",
		Long: `Pause the canary update ID: its current weight stays, its step does not
end by itself (coordctl promote still moves it, coordctl abort rolls it back,
and its analysis still aborts it). coordctl resume ID undoes it.`,
		Example: `  coordctl pause 20261122T231839-6bc2b115`,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.Update, error) {
				return cl.PauseUpdate(ctx, &coordinatorv1.PauseUpdateRequest{Id: args[0]})
			})
			if err != nil {
				return err
			}
			return c.print(u, func(w io.Writer) error { return renderUpdate(w, u, time.Now()) })
		},
	}
}
