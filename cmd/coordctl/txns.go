package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerCommand(newTxnsCmd) }

func newTxnsCmd(c *cli) *cobra.Command {
	var (
		service string
		limit   uint32
	)
	cmd := &cobra.Command{
		Use:     "txns",
		Aliases: []string{"transactions"},
		Short:   "List live transactions",
		Long: `List live transactions: id, entry service, owning session, flags
(legacy: restored from storage; implicit: created by a call seen before its
Begin; learned: used an undeclared edge), the service versions used, the
running sub-transactions (service#id, and the services each said it is done
with) and the services each one blocks now.`,
		Example: `  coordctl txns
  coordctl txns --service orders --limit 1000`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &coordinatorv1.ListTransactionsRequest{Service: service, Limit: limit}
			resp, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.ListTransactionsResponse, error) {
				return cl.ListTransactions(ctx, req)
			})
			if err != nil {
				return err
			}
			return c.print(resp, func(w io.Writer) error { return renderTxns(w, resp) })
		},
	}
	cmd.Flags().StringVar(&service, "service", "", "only transactions that used this service")
	cmd.Flags().Uint32Var(&limit, "limit", 0, "most transactions to list (0: the server's default, 100; at most 10000)")
	return cmd
}

// renderTxns writes a table of the transactions in r and the total.
func renderTxns(w io.Writer, r *coordinatorv1.ListTransactionsResponse) error {
	txns := r.GetTransactions()
	if len(txns) > 0 {
		t := newTable(w, "TXN", "ENTRY", "OWNER", "FLAGS", "USED", "RUNNING", "BLOCKS")
		for _, x := range txns {
			t.row(
				x.GetTxnId(),
				x.GetEntry(),
				x.GetOwner(),
				txnFlags(x),
				usedList(x.GetUsed()),
				runningList(x.GetRunning()),
				strings.Join(x.GetBlocks(), ","),
			)
		}
		if err := t.flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	total := int(r.GetTotal())
	fmt.Fprintf(w, "Total: %s", plural(total, "live transaction", "live transactions"))
	if len(txns) < total {
		fmt.Fprintf(w, " (showing %d; raise --limit to see more)", len(txns))
	}
	_, err := fmt.Fprintln(w)
	return err
}

// txnFlags is "legacy,implicit,learned", or the subset that applies.
func txnFlags(x *coordinatorv1.Transaction) string {
	var f []string
	if x.GetLegacy() {
		f = append(f, "legacy")
	}
	if x.GetImplicit() {
		f = append(f, "implicit")
	}
	if x.GetLearnedEdge() {
		f = append(f, "learned")
	}
	return strings.Join(f, ",")
}

// usedList is "svc@ver,svc@ver".
func usedList(used []*coordinatorv1.ServiceVersion) string {
	s := make([]string, len(used))
	for i, u := range used {
		s[i] = u.GetService() + "@" + u.GetVersion()
	}
	return strings.Join(s, ",")
}

// runningList is "svc#id,svc#id(done:a+b)".
func runningList(subs []*coordinatorv1.SubTransaction) string {
	s := make([]string, len(subs))
	for i, sub := range subs {
		s[i] = sub.GetService() + "#" + strconv.FormatUint(sub.GetId(), 10)
		if done := sub.GetDone(); len(done) > 0 {
			s[i] += "(done:" + strings.Join(done, "+") + ")"
		}
	}
	return strings.Join(s, ",")
}
