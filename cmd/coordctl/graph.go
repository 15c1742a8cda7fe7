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

func init() { registerCommand(newGraphCmd) }

func newGraphCmd(c *cli) *cobra.Command {
	var (
		dot      bool
		txnLimit uint32
	)
	cmd := &cobra.Command{
		Use:   "graph",
		Short: "Show the static graph and what live transactions used",
		Long: `Show every service (free or not, how many live transactions used it and
how many block it, its sessions per version, the ids of some transactions
that used it) and the static edges, learned ones marked.

With --dot, print a Graphviz digraph instead: blocked services are
highlighted, learned edges are dashed. Render it with e.g.
  coordctl graph --dot | dot -Tsvg > graph.svg`,
		Example: `  coordctl graph
  coordctl graph --txn-limit 50
  coordctl graph --dot | dot -Tpng > graph.png`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dot && c.opts.output == outputJSON {
				return usageErrorf("--dot and -o json cannot be used together")
			}
			req := &coordinatorv1.GetGraphRequest{TxnLimit: txnLimit}
			resp, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.Graph, error) {
				return cl.GetGraph(ctx, req)
			})
			if err != nil {
				return err
			}
			if dot {
				return renderGraphDOT(c.stdout, resp)
			}
			return c.print(resp, func(w io.Writer) error { return renderGraphText(w, resp) })
		},
	}
	cmd.Flags().BoolVar(&dot, "dot", false, "print a Graphviz DOT digraph")
	cmd.Flags().Uint32Var(&txnLimit, "txn-limit", 0, "most transaction ids to list per service (0: the server's default, 10; at most 1000)")
	return cmd
}

// renderGraphText writes a table of services, a table of edges and a summary.
func renderGraphText(w io.Writer, g *coordinatorv1.Graph) error {
	if len(g.GetServices()) == 0 {
		fmt.Fprintln(w, "No services.")
	} else {
		t := newTable(w, "SERVICE", "FREE", "USED BY", "BLOCKING", "SESSIONS", "TRANSACTIONS")
		for _, s := range g.GetServices() {
			t.row(
				s.GetName(),
				yesNo(s.GetFree()),
				strconv.FormatUint(uint64(s.GetUsedBy()), 10),
				strconv.FormatUint(uint64(s.GetBlocking()), 10),
				versionSessions(s.GetVersions()),
				serviceTxns(s),
			)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w)
	learned := 0
	if len(g.GetEdges()) == 0 {
		fmt.Fprintln(w, "No edges.")
	} else {
		t := newTable(w, "FROM", "TO", "KIND")
		for _, e := range g.GetEdges() {
			kind := "declared"
			if e.GetLearned() {
				kind = "learned"
				learned++
			}
			t.row(e.GetFrom(), e.GetTo(), kind)
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w)
	_, err := fmt.Fprintf(w, "%s, %s (%d learned), %s\n",
		plural(len(g.GetServices()), "service", "services"),
		plural(len(g.GetEdges()), "edge", "edges"), learned,
		plural(int(g.GetLiveTransactions()), "live transaction", "live transactions"))
	return err
}

// versionSessions is "v1:2 v2:1", sessions per version.
func versionSessions(vs []*coordinatorv1.VersionSessions) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = v.GetVersion() + ":" + strconv.FormatUint(uint64(v.GetSessions()), 10)
	}
	return strings.Join(s, " ")
}

// serviceTxns is the listed transaction ids of s, with how many more used it.
func serviceTxns(s *coordinatorv1.ServiceNode) string {
	ids := strings.Join(s.GetTransactions(), ",")
	if more := int(s.GetUsedBy()) - len(s.GetTransactions()); more > 0 {
		if ids == "" {
			return fmt.Sprintf("(%d not listed)", more)
		}
		ids += fmt.Sprintf(" (+%d more)", more)
	}
	return ids
}

// renderGraphDOT writes g as a Graphviz digraph. Node ids are the service
// names, always quoted; each node is labelled with its name and its used_by
// and blocking counts; services that are not free are filled red; learned
// edges are dashed.
func renderGraphDOT(w io.Writer, g *coordinatorv1.Graph) error {
	var b strings.Builder
	b.WriteString("digraph coordinator {\n")
	fmt.Fprintf(&b, "  graph [rankdir=LR, labelloc=t, label=%s];\n",
		dotQuote(plural(int(g.GetLiveTransactions()), "live transaction", "live transactions")))
	b.WriteString("  node [shape=box, style=rounded];\n")
	for _, s := range g.GetServices() {
		label := fmt.Sprintf("%s\nused_by=%d blocking=%d", s.GetName(), s.GetUsedBy(), s.GetBlocking())
		fmt.Fprintf(&b, "  %s [label=%s", dotQuote(s.GetName()), dotQuote(label))
		if !s.GetFree() || s.GetBlocking() > 0 {
			b.WriteString(`, style="rounded,filled,bold", color="#c0392b", fillcolor="#f8d7da"`)
		}
		b.WriteString("];\n")
	}
	for _, e := range g.GetEdges() {
		fmt.Fprintf(&b, "  %s -> %s", dotQuote(e.GetFrom()), dotQuote(e.GetTo()))
		if e.GetLearned() {
			b.WriteString(` [style=dashed, label="learned"]`)
		}
		b.WriteString(";\n")
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// dotQuote makes s a DOT double-quoted string: backslashes and quotes are
// escaped, a newline becomes \n (a line break in labels) and other control
// characters a space. The same name always gives the same id.
func dotQuote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r < 0x20 || r == 0x7f:
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
