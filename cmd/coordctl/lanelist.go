package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerLaneCommand(newLaneListCmd) }

func newLaneListCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the lanes",
		Long:    `List every lane: its members, the header and tag that select it, and the update promoting it, if any.`,
		Example: `  coordctl lane list -o json`,
		Args:    exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.ListLanesResponse, error) {
				return cl.ListLanes(ctx, &coordinatorv1.ListLanesRequest{})
			})
			if err != nil {
				return err
			}
			return c.print(resp, func(w io.Writer) error {
				t := newTable(w, "LANE", "MEMBERS", "SELECTED BY", "PROMOTION")
				for _, l := range resp.GetLanes() {
					t.row(l.GetName(), laneMemberList(l), laneSelector(l), l.GetPromotion())
				}
				return t.flush()
			})
		},
	}
}
