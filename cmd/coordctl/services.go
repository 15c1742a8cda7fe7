package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerCommand(newServicesCmd) }

func newServicesCmd(c *cli) *cobra.Command {
	var limit uint32
	cmd := &cobra.Command{
		Use:   "services",
		Short: "List the services: the version each runs, its updates, free or not",
		Long: `List the services the coordinator knows, by name: the version calls go to
by default, every version with its instances and live transactions
(VERSIONS: "v1:2/5" is version v1 with 2 instances and 5 live transactions
that used it), whether the service is free, the phase of the update in
progress and how the last update ended and how long ago.

-o wide adds the blocking transactions and the updates' ids, strategies and
versions; coordctl service NAME shows one service in detail.`,
		Example: `  coordctl services
  coordctl services -o wide
  coordctl services -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &coordinatorv1.ListServicesRequest{Limit: limit}
			r, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.ListServicesResponse, error) {
				return cl.ListServices(ctx, req)
			})
			if err != nil {
				return err
			}
			return c.print(r, func(w io.Writer) error { return renderServices(w, r, c.wide(), time.Now()) })
		},
	}
	cmd.Flags().Uint32Var(&limit, "limit", 0, "most services to list, by name (0: the server's default, 100; at most 10000)")
	return cmd
}

// Widths of the services table's columns when it fits a terminal.
const (
	colService  = 16
	colVersion  = 8
	colVersions = 15
	colPhase    = 10 // PREPARING
	colLast     = 15 // ABORTED 59m ago
)

// renderServices writes a table of services; wide shows every column,
// uncut.
func renderServices(w io.Writer, r *coordinatorv1.ListServicesResponse, wide bool, now time.Time) error {
	if len(r.GetServices()) == 0 {
		_, err := fmt.Fprintln(w, "No services.")
		return err
	}
	if wide {
		t := newTable(w, "SERVICE", "DEFAULT", "VERSIONS", "FREE", "BLOCKING", "TXNS", "UPDATE", "LAST UPDATE")
		for _, s := range r.GetServices() {
			t.row(s.GetName(), s.GetDefaultVersion(), versionsCell(s), yesNo(s.GetFree()),
				fmt.Sprint(s.GetBlocking()), fmt.Sprint(s.GetLiveTransactions()),
				updateCell(s.GetUpdate(), now), lastUpdateCell(s.GetLastUpdate(), now))
		}
		if err := t.flush(); err != nil {
			return err
		}
	} else {
		t := newTable(w, "SERVICE", "DEFAULT", "VERSIONS", "FREE", "UPDATE", "LAST UPDATE")
		for _, s := range r.GetServices() {
			update := ""
			if u := s.GetUpdate(); u != nil {
				update = phaseName(u.GetPhase())
			}
			last := ""
			if u := s.GetLastUpdate(); u != nil {
				last = phaseName(u.GetPhase()) + " " + ago(u.GetFinishedAt().AsTime(), now) + " ago"
			}
			t.row(fit(s.GetName(), colService), fit(s.GetDefaultVersion(), colVersion), fit(versionsCell(s), colVersions),
				yesNo(s.GetFree()), fit(update, colPhase), fit(last, colLast))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if n, total := len(r.GetServices()), int(r.GetTotal()); n < total {
		fmt.Fprintf(w, "Showing %d of %d services; raise --limit to see more.\n", n, total)
	}
	return nil
}

// versionsCell is "v1:2/5 v2:1/0": each version, its instances and the
// live transactions that used it.
func versionsCell(s *coordinatorv1.ServiceState) string {
	parts := make([]string, 0, len(s.GetVersions()))
	for _, v := range s.GetVersions() {
		parts = append(parts, fmt.Sprintf("%s:%d/%d", v.GetVersion(), v.GetInstances(), v.GetLiveTransactions()))
	}
	return strings.Join(parts, " ")
}

// updateCell is an update in progress in one cell: id, strategy,
// versions, phase and how long it has run.
func updateCell(u *coordinatorv1.Update, now time.Time) string {
	if u == nil {
		return ""
	}
	return fmt.Sprintf("%s %s %s->%s %s %s", u.GetId(), strategyName(u.GetStrategy()), u.GetFromVersion(),
		u.GetToVersion(), phaseName(u.GetPhase()), elapsed(u, now))
}

// lastUpdateCell is a finished update in one cell: id, strategy, versions,
// outcome and how long ago it finished.
func lastUpdateCell(u *coordinatorv1.Update, now time.Time) string {
	if u == nil {
		return ""
	}
	return fmt.Sprintf("%s %s %s->%s %s %s ago", u.GetId(), strategyName(u.GetStrategy()), u.GetFromVersion(),
		u.GetToVersion(), phaseName(u.GetPhase()), ago(u.GetFinishedAt().AsTime(), now))
}

// ago is how long before now t was, in its largest unit: "40s", "3m",
// "5h", "2d".
func ago(t, now time.Time) string {
	d := max(now.Sub(t), 0)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
