package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerLaneCommand(newLaneCreateCmd) }

func newLaneCreateCmd(c *cli) *cobra.Command {
	var header, tag string
	cmd := &cobra.Command{
		Use:   "create NAME SERVICE=VERSION... [--header H] [--tag T]",
		Short: "Create a lane",
		Long: `Create the lane NAME (lower-case letters, digits and '-') of 1 to 16
members, each SERVICE=VERSION of a service and version the coordinator knows.
Requests whose header H (default x-lane) is T (default NAME) when they enter
the mesh run in it. A lane is changed by deleting it and creating it again:
running transactions keep the member map they entered with.`,
		Example: `  coordctl lane create gray proc=v2 auth=v2
  coordctl lane create beta portal=v3 --header x-env --tag beta-users`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("lane create: missing argument NAME")
			}
			_, err := laneMembers(args[1:])
			return err
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			members, _ := laneMembers(args[1:])
			req := &coordinatorv1.CreateLaneRequest{Lane: &coordinatorv1.Lane{Name: args[0], Members: members, Header: header, Tag: tag}}
			l, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.Lane, error) {
				return cl.CreateLane(ctx, req)
			})
			if err != nil {
				return err
			}
			return c.print(l, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Lane %s created: %s, selected by %s.\n", l.GetName(), laneMemberList(l), laneSelector(l))
				return err
			})
		},
	}
	cmd.Flags().StringVar(&header, "header", "", "the request header that selects the lane (default x-lane)")
	cmd.Flags().StringVar(&tag, "tag", "", "the header's value that selects the lane (default: its name)")
	return cmd
}
