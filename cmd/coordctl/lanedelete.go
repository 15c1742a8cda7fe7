package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerLaneCommand(newLaneDeleteCmd) }

func newLaneDeleteCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a lane",
		Long: `Delete the lane NAME: requests that enter from now on run on the default
versions; transactions running in it keep its member map until they end. A
lane being promoted cannot be deleted (abort the promotion's update first).`,
		Example: `  coordctl lane delete gray`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.Lane, error) {
				return cl.DeleteLane(ctx, &coordinatorv1.DeleteLaneRequest{Name: args[0]})
			})
			if err != nil {
				return err
			}
			return c.print(l, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Lane %s deleted.\n", l.GetName())
				return err
			})
		},
	}
}
