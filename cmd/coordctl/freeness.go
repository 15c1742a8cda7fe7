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

func init() { registerCommand(newFreenessCmd) }

// freenessPoll is how often freeness --wait asks again.
const freenessPoll = 200 * time.Millisecond

// defaultWaitTimeout bounds freeness --wait, as kubectl wait's --timeout.
const defaultWaitTimeout = 30 * time.Second

func newFreenessCmd(c *cli) *cobra.Command {
	var (
		limit       uint32
		wait        bool
		waitTimeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "freeness SERVICE",
		Short: "Show whether a service is free and which transactions block it",
		Long: `Show whether SERVICE is free, that is whether no live transaction that
already used it may still call it, and list the transactions that block it
with the reason: the version they used (past) and the service from which
they can still reach it (future).

Exit status: 0 when the service is free, 3 when it is not (the answer is
printed all the same), 1 when the call failed. With --wait it asks again
until the service is free or --wait-timeout (default 30s) passes, then
prints the last answer.`,
		Example: `  coordctl freeness orders
  coordctl freeness orders --limit 200 -o json
  coordctl freeness orders --wait --wait-timeout 2m && echo free`,
		Args: exactArgs("SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("wait-timeout") && !wait {
				return usageErrorf("--wait-timeout needs --wait")
			}
			if waitTimeout <= 0 {
				return usageErrorf("--wait-timeout must be positive, got %s", waitTimeout)
			}
			req := &coordinatorv1.GetFreenessRequest{Service: args[0], Limit: limit}
			get := func() (*coordinatorv1.Freeness, error) {
				return callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.Freeness, error) {
					return cl.GetFreeness(ctx, req)
				})
			}
			var resp *coordinatorv1.Freeness
			var err error
			if wait {
				resp, err = waitFree(cmd.Context(), get, waitTimeout, freenessPoll)
			} else {
				resp, err = get()
			}
			if err != nil {
				return err
			}
			if err := c.print(resp, func(w io.Writer) error { return renderFreeness(w, resp) }); err != nil {
				return err
			}
			switch {
			case resp.GetFree():
				return nil
			case wait:
				return statusError{exitNotFree, fmt.Errorf("%s is still not free after --wait-timeout %s", resp.GetService(), waitTimeout)}
			}
			return statusError{code: exitNotFree} // the answer says it
		},
	}
	f := cmd.Flags()
	f.Uint32Var(&limit, "limit", 0, "most blocking transactions to list (0: the server's default, 20; at most 1000)")
	f.BoolVar(&wait, "wait", false, "ask again until the service is free or --wait-timeout passes")
	f.DurationVar(&waitTimeout, "wait-timeout", defaultWaitTimeout, "with --wait: give up after this long (exit 3)")
	return cmd
}

// waitFree asks get every poll until the service is free or timeout
// passes (or ctx ends), and returns the last answer; a failed call ends
// the wait with its error.
func waitFree(ctx context.Context, get func() (*coordinatorv1.Freeness, error), timeout, poll time.Duration) (*coordinatorv1.Freeness, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		f, err := get()
		if err != nil || f.GetFree() || !time.Now().Before(deadline) {
			return f, err
		}
		select {
		case <-ctx.Done():
			return f, nil
		case <-tick.C:
		}
	}
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
