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

With --dot, print a Graphviz digraph instead: each service with its default
version, sessions per version and the update in progress (double border);
blocked services are highlighted, learned edges are dashed. Render it with e.g.
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
				// The services view adds each one's default version and the
				// update in progress.
				svcs, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.ListServicesResponse, error) {
					return cl.ListServices(ctx, &coordinatorv1.ListServicesRequest{Limit: maxListedServices})
				})
				if err != nil {
					return err
				}
				return renderGraphDOT(c.stdout, resp, svcs.GetServices())
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

// maxListedServices is ListServices' most: graph --dot asks for every
// service's state.
const maxListedServices = 10000

// renderGraphDOT writes g as a Graphviz digraph. Node ids are the service
// names, always quoted; each node is labelled with its name, its default
// version (from svcs, the services view, when it has the service), its
// sessions per version, its used_by and blocking counts and the update in
// progress; services that are not free are filled red, a service being
// updated has a double border; learned edges are dashed.
func renderGraphDOT(w io.Writer, g *coordinatorv1.Graph, svcs []*coordinatorv1.ServiceState) error {
	state := make(map[string]*coordinatorv1.ServiceState, len(svcs))
	for _, s := range svcs {
		state[s.GetName()] = s
	}
	var b strings.Builder
	b.WriteString("digraph coordinator {\n")
	fmt.Fprintf(&b, "  graph [rankdir=LR, labelloc=t, label=%s];\n",
		dotQuote(plural(int(g.GetLiveTransactions()), "live transaction", "live transactions")))
	b.WriteString("  node [shape=box, style=rounded];\n")
	for _, s := range g.GetServices() {
		st := state[s.GetName()]
		fmt.Fprintf(&b, "  %s [label=%s", dotQuote(s.GetName()), dotQuote(dotLabel(s, st)))
		if !s.GetFree() || s.GetBlocking() > 0 {
			b.WriteString(`, style="rounded,filled,bold", color="#c0392b", fillcolor="#f8d7da"`)
		}
		if st.GetUpdate() != nil {
			b.WriteString(", peripheries=2")
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

// dotLabel is a node's label, one fact a line: the name, "default v1"
// when st is known, the sessions per version ("sessions v1:2 v2:1"), the
// counts, and the update in progress ("updating v1 -> v2: DRAINING").
func dotLabel(s *coordinatorv1.ServiceNode, st *coordinatorv1.ServiceState) string {
	lines := []string{s.GetName()}
	if d := st.GetDefaultVersion(); d != "" {
		lines = append(lines, "default "+d)
	}
	if len(s.GetVersions()) > 0 {
		lines = append(lines, "sessions "+versionSessions(s.GetVersions()))
	}
	lines = append(lines, fmt.Sprintf("used_by=%d blocking=%d", s.GetUsedBy(), s.GetBlocking()))
	if u := st.GetUpdate(); u != nil {
		lines = append(lines, fmt.Sprintf("updating %s -> %s: %s", u.GetFromVersion(), u.GetToVersion(), phaseName(u.GetPhase())))
	}
	return strings.Join(lines, "\n")
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
