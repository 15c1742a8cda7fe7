package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Lanes (DESIGN.md §4.9): `coordctl lane create|list|delete|promote`, one
// file per action (lane*.go), each adding itself with registerLaneCommand.

func init() { registerCommand(newLaneCmd) }

// laneFactories are the actions of `coordctl lane`.
var laneFactories []func(*cli) *cobra.Command

// registerLaneCommand adds an action of `coordctl lane`.
func registerLaneCommand(f func(*cli) *cobra.Command) { laneFactories = append(laneFactories, f) }

func newLaneCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lane create|list|delete|promote",
		Short: "Manage lanes: named sets of service versions a request selects by a header",
		Long: `A lane is a named set of service versions (gray: proc=v2 auth=v2). A
request that enters the mesh with the lane's header and tag (x-lane: gray by
default) runs on the lane's versions where the lane has one and on the
default versions elsewhere. The lane's member map is fixed when the request
enters: editing, deleting or promoting the lane never moves a transaction
that is running. promote makes the lane's versions the defaults through one
set update, and deletes the lane when that update is DONE.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("lane: want an action: create, list, delete or promote")
			}
			return usageErrorf("lane: unknown action %q: want create, list, delete or promote", args[0])
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	for _, f := range laneFactories {
		cmd.AddCommand(f(c))
	}
	return cmd
}

// laneMembers reads SERVICE=VERSION arguments.
func laneMembers(args []string) ([]*coordinatorv1.ServiceVersion, error) {
	if len(args) == 0 {
		return nil, usageErrorf("lane create: missing SERVICE=VERSION (at least one member)")
	}
	out := make([]*coordinatorv1.ServiceVersion, 0, len(args))
	for _, a := range args {
		svc, ver, ok := strings.Cut(a, "=")
		if !ok || strings.TrimSpace(svc) == "" || strings.TrimSpace(ver) == "" {
			return nil, usageErrorf("lane create: %q: want SERVICE=VERSION", a)
		}
		out = append(out, &coordinatorv1.ServiceVersion{Service: svc, Version: ver})
	}
	return out, nil
}

// laneMemberList is "auth=v2 proc=v2".
func laneMemberList(l *coordinatorv1.Lane) string {
	parts := make([]string, len(l.GetMembers()))
	for i, m := range l.GetMembers() {
		parts[i] = m.GetService() + "=" + m.GetVersion()
	}
	return strings.Join(parts, " ")
}

// laneSelector is "x-lane: gray".
func laneSelector(l *coordinatorv1.Lane) string {
	return fmt.Sprintf("%s: %s", l.GetHeader(), l.GetTag())
}
