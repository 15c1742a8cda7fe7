package main

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerCommand(newSessionsCmd) }

func newSessionsCmd(c *cli) *cobra.Command {
	var service string
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "List sidecar sessions",
		Long: `List the sidecar sessions the coordinator knows: instance, service and
version, address, lease TTL, whether a stream is open now, how many root
transactions the session owns and when it registered (UTC).`,
		Example: `  coordctl sessions
  coordctl sessions --service orders`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &coordinatorv1.ListSessionsRequest{Service: service}
			resp, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.ListSessionsResponse, error) {
				return cl.ListSessions(ctx, req)
			})
			if err != nil {
				return err
			}
			return c.print(resp, func(w io.Writer) error { return renderSessions(w, resp) })
		},
	}
	cmd.Flags().StringVar(&service, "service", "", "only sessions of this service")
	return cmd
}

// renderSessions writes a table of the sessions in r.
func renderSessions(w io.Writer, r *coordinatorv1.ListSessionsResponse) error {
	if len(r.GetSessions()) == 0 {
		_, err := fmt.Fprintln(w, "No sessions.")
		return err
	}
	t := newTable(w, "INSTANCE", "SERVICE", "VERSION", "ADDRESS", "TTL", "CONNECTED", "ROOTS", "REGISTERED")
	for _, s := range r.GetSessions() {
		t.row(
			s.GetInstanceId(),
			s.GetService(),
			s.GetVersion(),
			s.GetAddress(),
			formatDuration(s.GetTtl()),
			yesNo(s.GetConnected()),
			strconv.FormatUint(uint64(s.GetRoots()), 10),
			formatTime(s.GetRegisteredAt()),
		)
	}
	return t.flush()
}
