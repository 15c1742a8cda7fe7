package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerCommand(newHistoryCmd) }

func newHistoryCmd(c *cli) *cobra.Command {
	var limit uint32
	cmd := &cobra.Command{
		Use:   "history SERVICE",
		Short: "List the updates of a service, newest first",
		Long: `List the updates of SERVICE the coordinator keeps (finished ones per its
--update-retention and --update-max-age), newest first: id (which starts
with when it started, UTC), versions, strategy, phase and how long it ran.
-o wide adds when each started and finished and why it was aborted or failed.
With no update kept, a service the coordinator does not know is an error
(exit 1); a forgotten service's kept updates are still listed.

coordctl status ID shows one in detail; coordctl rollback SERVICE starts an
update back to the version before the last one that finished DONE.`,
		Example: `  coordctl history auth-service
  coordctl history auth-service -o wide --limit 5`,
		Args: exactArgs("SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &coordinatorv1.ListUpdatesRequest{Service: args[0], Limit: limit}
			r, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.ListUpdatesResponse, error) {
				return cl.ListUpdates(ctx, req)
			})
			if err != nil {
				return err
			}
			if len(r.GetUpdates()) == 0 {
				// No update kept: say so only of a service the coordinator
				// knows, so that a mistyped name is an error, not "No updates".
				if _, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.ServiceState, error) {
					return cl.GetService(ctx, &coordinatorv1.GetServiceRequest{Service: args[0], InstanceLimit: 1, TxnLimit: 1})
				}); err != nil {
					return err
				}
			}
			return c.print(r, func(w io.Writer) error { return renderHistory(w, args[0], r, c.wide(), time.Now()) })
		},
	}
	cmd.Flags().Uint32Var(&limit, "limit", 0, "most updates to list (0: the server's default, 50; at most 1000)")
	return cmd
}

// renderHistory writes the updates of one service, newest first.
func renderHistory(w io.Writer, service string, r *coordinatorv1.ListUpdatesResponse, wide bool, now time.Time) error {
	if len(r.GetUpdates()) == 0 {
		_, err := fmt.Fprintf(w, "No updates of %s.\n", cell(service))
		return err
	}
	if wide {
		t := newTable(w, "ID", "VERSIONS", "STRATEGY", "PHASE", "STARTED", "FINISHED", "ELAPSED", "REASON")
		for _, u := range r.GetUpdates() {
			t.row(u.GetId(), u.GetFromVersion()+" -> "+u.GetToVersion(), strategyName(u.GetStrategy()),
				phaseName(u.GetPhase()), formatTime(u.GetCreatedAt()), formatTime(u.GetFinishedAt()),
				elapsed(u, now).String(), u.GetReason())
		}
		return t.flush()
	}
	t := newTable(w, "ID", "VERSIONS", "STRATEGY", "PHASE", "ELAPSED")
	for _, u := range r.GetUpdates() {
		t.row(fit(u.GetId(), 26), fit(u.GetFromVersion()+" -> "+u.GetToVersion(), 16), strategyName(u.GetStrategy()),
			phaseName(u.GetPhase()), fit(elapsed(u, now).String(), 10))
	}
	return t.flush()
}
