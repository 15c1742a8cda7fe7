package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerCommand(newFreenessCmd) }

func newFreenessCmd(c *cli) *cobra.Command {
	var limit uint32
	cmd := &cobra.Command{
		Use:   "freeness SERVICE",
		Short: "Show whether a service is free and which transactions block it",
		Long: `Show whether SERVICE is free, that is whether no live transaction that
already used it may still call it, and list the transactions that block it
with the reason: the version they used (past) and the service from which
they can still reach it (future).`,
		Example: `  coordctl freeness orders
  coordctl freeness orders --limit 200 -o json`,
		Args: exactArgs("SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &coordinatorv1.GetFreenessRequest{Service: args[0], Limit: limit}
			resp, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.Freeness, error) {
				return cl.GetFreeness(ctx, req)
			})
			if err != nil {
				return err
			}
			return c.print(resp, func(w io.Writer) error { return renderFreeness(w, resp) })
		},
	}
	cmd.Flags().Uint32Var(&limit, "limit", 0, "most blocking transactions to list (0: the server's default, 20; at most 1000)")
	return cmd
}

// renderFreeness writes a summary of f and a table of its blockers.
func renderFreeness(w io.Writer, f *coordinatorv1.Freeness) error {
	blocking := int(f.GetBlocking())
	shown := len(f.GetBlockers())
	fmt.Fprintf(w, "Service:   %s\n", cell(f.GetService()))
	fmt.Fprintf(w, "Free:      %s\n", yesNo(f.GetFree()))
	fmt.Fprintf(w, "Blocking:  %s", plural(blocking, "transaction", "transactions"))
	if shown < blocking {
		fmt.Fprintf(w, " (showing %d; raise --limit to see more)", shown)
	}
	fmt.Fprintln(w)
	if m := int(f.GetResyncMissing()); m > 0 {
		fmt.Fprintf(w, "Resync:    %s known in etcd not back since the failover: not known free",
			plural(m, "session", "sessions"))
		if ids := f.GetResyncSessions(); len(ids) > 0 {
			fmt.Fprintf(w, " (%s", strings.Join(ids, ", "))
			if len(ids) < m {
				fmt.Fprintf(w, ", ...")
			}
			fmt.Fprint(w, ")")
		}
		fmt.Fprintln(w)
	}
	if shown == 0 {
		return nil
	}
	fmt.Fprintln(w)
	t := newTable(w, "TXN", "PAST", "FUTURE VIA", "REASON")
	for _, b := range f.GetBlockers() {
		t.row(b.GetTxnId(), blockerPast(b), b.GetFutureVia(), b.GetReason())
	}
	return t.flush()
}

// blockerPast is the version a blocker used, with its running and legacy
// marks: "v1", "v1 (running)", "(legacy)".
func blockerPast(b *coordinatorv1.Blocker) string {
	var marks []string
	if b.GetRunning() {
		marks = append(marks, "running")
	}
	if b.GetLegacy() {
		marks = append(marks, "legacy")
	}
	s := b.GetPastVersion()
	if len(marks) > 0 {
		m := "(" + strings.Join(marks, ", ") + ")"
		if s == "" {
			return m
		}
		s += " " + m
	}
	return s
}
