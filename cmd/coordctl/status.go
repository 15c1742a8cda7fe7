package main

import (
	"context"
	"io"
	"time"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerCommand(newStatusCmd) }

func newStatusCmd(c *cli) *cobra.Command {
	var (
		service string
		watch   bool
		limit   uint32
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status [ID]",
		Short: "Show updates, or one update in detail",
		Long: `Without ID, list the updates, newest first. With ID, show that update with
its history and live progress; --watch (-w) follows it until it finishes
(exit 0 when DONE, 1 when ABORTED or FAILED, or when --watch-timeout passes
first: the update goes on).`,
		Example: `  coordctl status
  coordctl status 20261122T231839-6bc2b115 --watch`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				if watch {
					return usageErrorf("--watch needs an update ID")
				}
				req := &coordinatorv1.ListUpdatesRequest{Service: service, Limit: limit}
				r, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.ListUpdatesResponse, error) {
					return cl.ListUpdates(ctx, req)
				})
				if err != nil {
					return err
				}
				return c.print(r, func(w io.Writer) error { return renderUpdates(w, r, time.Now()) })
			}
			if timeout != 0 && !watch {
				return usageErrorf("--watch-timeout needs --watch")
			}
			if timeout < 0 {
				return usageErrorf("--watch-timeout must not be negative")
			}
			if watch {
				return c.runWatch(cmd, args[0], timeout)
			}
			u, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.Update, error) {
				return cl.GetUpdate(ctx, &coordinatorv1.GetUpdateRequest{Id: args[0]})
			})
			if err != nil {
				return err
			}
			return c.print(u, func(w io.Writer) error { return renderUpdate(w, u, time.Now()) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&service, "service", "", "list only updates of this service")
	f.Uint32Var(&limit, "limit", 0, "most updates to list (0: the server's default, 50)")
	f.BoolVarP(&watch, "watch", "w", false, "follow the update until it finishes")
	f.DurationVar(&timeout, "watch-timeout", 0, "with --watch: stop watching after this long, exit 1 (the update goes on; 0: until it finishes)")
	return cmd
}
