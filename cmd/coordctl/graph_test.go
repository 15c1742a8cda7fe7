package main

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"unicode"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func TestRenderGraphText(t *testing.T) {
	var buf bytes.Buffer
	g := testGraph()
	g.Services[1].UsedBy = 5 // 2 of 5 listed
	if err := renderGraphText(&buf, g); err != nil {
		t.Fatal(err)
	}
	want := `SERVICE  FREE  USED BY  BLOCKING  SESSIONS   TRANSACTIONS
gateway  yes   2        0         v1:2       t-1,t-2
orders   no    5        2         v1:1 v2:3  t-1,t-2 (+3 more)
audit    yes   0        0         -          -

FROM     TO      KIND
gateway  orders  declared
orders   audit   learned

3 services, 2 edges (1 learned), 4 live transactions
`
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestRenderGraphTextEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := renderGraphText(&buf, &coordinatorv1.Graph{}); err != nil {
		t.Fatal(err)
	}
	want := "No services.\n\nNo edges.\n\n0 services, 0 edges (0 learned), 0 live transactions\n"
	if got := buf.String(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestServiceTxnsNoneListed(t *testing.T) {
	if got := serviceTxns(&coordinatorv1.ServiceNode{UsedBy: 3}); got != "(3 not listed)" {
		t.Errorf("got %q", got)
	}
}

// oddNames are service names that are not DOT identifiers.
var oddNames = []string{
	"orders-v2", "payments.svc", "node", "edge", "Digraph", "123abc", "with space",
	`we"ird`, `back\slash`, `trailing\`, `\N`, "multi\nline", "ünïcode", "a->b", "{x}", "[y]", "a;b", "a=b", "",
}

func oddGraph() *coordinatorv1.Graph {
	g := &coordinatorv1.Graph{LiveTransactions: 1}
	for i, n := range oddNames {
		g.Services = append(g.Services, &coordinatorv1.ServiceNode{Name: n, Free: i%2 == 0, UsedBy: uint32(i), Blocking: uint32(i % 2)})
		if i > 0 {
			g.Edges = append(g.Edges, &coordinatorv1.Edge{From: oddNames[i-1], To: n, Learned: i%3 == 0})
		}
	}
	return g
}

func TestRenderGraphDOT(t *testing.T) {
	for _, g := range []*coordinatorv1.Graph{testGraph(), oddGraph(), {}} {
		var buf bytes.Buffer
		if err := renderGraphDOT(&buf, g, nil); err != nil {
			t.Fatal(err)
		}
		dg, err := parseDOT(buf.String())
		if err != nil {
			t.Fatalf("invalid DOT: %v\n%s", err, buf.String())
		}
		if len(dg.nodes) != len(g.GetServices()) {
			t.Errorf("%d node statements, want %d", len(dg.nodes), len(g.GetServices()))
		}
		for i, s := range g.GetServices() {
			n := dg.nodes[i]
			if got := escString(n.id); got != s.GetName() {
				t.Errorf("node %d id %q names %q, want %q", i, n.id, got, s.GetName())
			}
			wantLabel := s.GetName() + "\n"
			if len(s.GetVersions()) > 0 {
				wantLabel += "sessions " + versionSessions(s.GetVersions()) + "\n"
			}
			wantLabel += fmt.Sprintf("used_by=%d blocking=%d", s.GetUsedBy(), s.GetBlocking())
			if got := escString(n.attrs["label"]); got != wantLabel {
				t.Errorf("node %q label %q, want %q", s.GetName(), got, wantLabel)
			}
			blocked := !s.GetFree() || s.GetBlocking() > 0
			highlighted := strings.Contains(n.attrs["style"], "filled") && n.attrs["fillcolor"] != ""
			if blocked != highlighted {
				t.Errorf("node %q: blocked %v but highlighted %v (attrs %v)", s.GetName(), blocked, highlighted, n.attrs)
			}
		}
		if len(dg.edges) != len(g.GetEdges()) {
			t.Fatalf("%d edges, want %d", len(dg.edges), len(g.GetEdges()))
		}
		ids := map[string]bool{}
		for _, n := range dg.nodes {
			ids[n.id] = true
		}
		for i, e := range g.GetEdges() {
			de := dg.edges[i]
			if escString(de.from) != e.GetFrom() || escString(de.to) != e.GetTo() {
				t.Errorf("edge %d is %q -> %q, want %q -> %q", i, de.from, de.to, e.GetFrom(), e.GetTo())
			}
			if !ids[de.from] || !ids[de.to] {
				t.Errorf("edge %q -> %q does not use the node ids", de.from, de.to)
			}
			if dashed := de.attrs["style"] == "dashed"; dashed != e.GetLearned() {
				t.Errorf("edge %q -> %q: learned %v, dashed %v", e.GetFrom(), e.GetTo(), e.GetLearned(), dashed)
			}
		}
	}
}

func TestRenderGraphDOTExact(t *testing.T) {
	var buf bytes.Buffer
	// The services view knows gateway and orders (being updated), not audit.
	svcs := []*coordinatorv1.ServiceState{{Name: "gateway", DefaultVersion: "v1"},
		{Name: "orders", DefaultVersion: "v2", Update: &coordinatorv1.Update{FromVersion: "v1", ToVersion: "v2",
			Phase: coordinatorv1.Phase_PHASE_DRAINING}}}
	if err := renderGraphDOT(&buf, testGraph(), svcs); err != nil {
		t.Fatal(err)
	}
	want := `digraph coordinator {
  graph [rankdir=LR, labelloc=t, label="4 live transactions"];
  node [shape=box, style=rounded];
  "gateway" [label="gateway\ndefault v1\nsessions v1:2\nused_by=2 blocking=0"];
  "orders" [label="orders\ndefault v2\nsessions v1:1 v2:3\nused_by=3 blocking=2\nupdating v1 -> v2: DRAINING", style="rounded,filled,bold", color="#c0392b", fillcolor="#f8d7da", peripheries=2];
  "audit" [label="audit\nused_by=0 blocking=0"];
  "gateway" -> "orders";
  "orders" -> "audit" [style=dashed, label="learned"];
}
`
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestDotQuote(t *testing.T) {
	for in, want := range map[string]string{
		"orders":     `"orders"`,
		`a"b`:        `"a\"b"`,
		`trailing\`:  `"trailing\\"`,
		"two\nlines": `"two\nlines"`,
		"tab\there":  `"tab here"`,
		"":           `""`,
	} {
		if got := dotQuote(in); got != want {
			t.Errorf("dotQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestRenderGraphDOTGraphviz feeds the output to Graphviz when it is
// installed.
func TestRenderGraphDOTGraphviz(t *testing.T) {
	dot, err := exec.LookPath("dot")
	if err != nil {
		t.Skip("Graphviz dot not installed")
	}
	for _, g := range []*coordinatorv1.Graph{testGraph(), oddGraph()} {
		var buf bytes.Buffer
		if err := renderGraphDOT(&buf, g, nil); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(dot, "-Tcanon")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err := cmd.CombinedOutput()
		if err != nil || bytes.Contains(out, []byte("Error")) || bytes.Contains(out, []byte("Warning")) {
			t.Errorf("dot: %v\n%s", err, out)
		}
		// Every edge must join declared nodes: no node made up by a
		// mis-quoted id.
		gc, err := exec.LookPath("gc")
		if err != nil {
			continue
		}
		cmd = exec.Command(gc, "-n", "-e")
		cmd.Stdin = bytes.NewReader(buf.Bytes())
		out, err = cmd.Output()
		if err != nil {
			t.Fatalf("gc: %v", err)
		}
		var nodes, edges int
		if _, err := fmt.Sscan(string(out), &nodes, &edges); err != nil {
			t.Fatalf("gc output %q: %v", out, err)
		}
		if nodes != len(g.GetServices()) || edges != len(g.GetEdges()) {
			t.Errorf("Graphviz sees %d nodes and %d edges, want %d and %d", nodes, edges, len(g.GetServices()), len(g.GetEdges()))
		}
	}
}

// A small parser of the DOT subset renderGraphDOT writes, following the
// Graphviz grammar and lexer (keywords are case-insensitive and reserved,
// a quoted string ends at the first quote not escaped by a backslash).

type dotStmt struct {
	id, from, to string
	attrs        map[string]string
}

type dotGraph struct {
	nodes, edges []dotStmt
}

type dotToken struct {
	kind string // "id", "kw" or the punctuation itself
	text string // the id, unquoted as the lexer does it, or the keyword in lower case
}

func lexDOT(src string) ([]dotToken, error) {
	var toks []dotToken
	rs := []rune(src)
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case unicode.IsSpace(r):
			i++
		case r == '-' && i+1 < len(rs) && rs[i+1] == '>':
			toks = append(toks, dotToken{kind: "->"})
			i += 2
		case strings.ContainsRune("{}[];,=", r):
			toks = append(toks, dotToken{kind: string(r)})
			i++
		case r == '"':
			var b strings.Builder
			i++
			for {
				if i >= len(rs) {
					return nil, fmt.Errorf("unterminated quoted string %q", b.String())
				}
				if rs[i] == '"' {
					i++
					break
				}
				if rs[i] == '\\' && i+1 < len(rs) && rs[i+1] == '"' {
					b.WriteRune('"')
					i += 2
					continue
				}
				if rs[i] == '\\' && i+1 < len(rs) && rs[i+1] == '\\' {
					b.WriteString(`\\`)
					i += 2
					continue
				}
				if rs[i] == '\\' && i+1 < len(rs) && rs[i+1] == '\n' {
					i += 2
					continue
				}
				b.WriteRune(rs[i])
				i++
			}
			toks = append(toks, dotToken{kind: "id", text: b.String()})
		case r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || r == '#':
			j := i
			for j < len(rs) && (rs[j] == '_' || unicode.IsLetter(rs[j]) || unicode.IsDigit(rs[j])) {
				j++
			}
			if j == i {
				return nil, fmt.Errorf("unexpected %q", r)
			}
			word := string(rs[i:j])
			switch strings.ToLower(word) {
			case "digraph", "graph", "node", "edge", "strict", "subgraph":
				toks = append(toks, dotToken{kind: "kw", text: strings.ToLower(word)})
			default:
				toks = append(toks, dotToken{kind: "id", text: word})
			}
			i = j
		default:
			return nil, fmt.Errorf("unexpected %q at offset %d", r, i)
		}
	}
	return toks, nil
}

func parseDOT(src string) (*dotGraph, error) {
	toks, err := lexDOT(src)
	if err != nil {
		return nil, err
	}
	p := 0
	peek := func() dotToken {
		if p < len(toks) {
			return toks[p]
		}
		return dotToken{kind: "EOF"}
	}
	expect := func(kind, text string) error {
		tk := peek()
		if tk.kind != kind || (text != "" && tk.text != text) {
			return fmt.Errorf("token %d: want %s %s, got %s %q", p, kind, text, tk.kind, tk.text)
		}
		p++
		return nil
	}
	attrList := func() (map[string]string, error) {
		attrs := map[string]string{}
		for peek().kind == "[" {
			p++
			for peek().kind == "id" {
				k := peek().text
				p++
				if err := expect("=", ""); err != nil {
					return nil, err
				}
				if peek().kind != "id" {
					return nil, fmt.Errorf("attribute %s: want a value, got %s", k, peek().kind)
				}
				attrs[k] = peek().text
				p++
				if peek().kind == "," || peek().kind == ";" {
					p++
				}
			}
			if err := expect("]", ""); err != nil {
				return nil, err
			}
		}
		return attrs, nil
	}
	g := &dotGraph{}
	if err := expect("kw", "digraph"); err != nil {
		return nil, err
	}
	if peek().kind == "id" {
		p++
	}
	if err := expect("{", ""); err != nil {
		return nil, err
	}
	for peek().kind != "}" {
		tk := peek()
		switch {
		case tk.kind == "kw" && (tk.text == "graph" || tk.text == "node" || tk.text == "edge"):
			p++
			if peek().kind != "[" {
				return nil, fmt.Errorf("%s: want attributes", tk.text)
			}
			if _, err := attrList(); err != nil {
				return nil, err
			}
		case tk.kind == "id":
			p++
			if peek().kind == "->" {
				p++
				to := peek()
				if err := expect("id", ""); err != nil {
					return nil, err
				}
				attrs, err := attrList()
				if err != nil {
					return nil, err
				}
				g.edges = append(g.edges, dotStmt{from: tk.text, to: to.text, attrs: attrs})
			} else {
				attrs, err := attrList()
				if err != nil {
					return nil, err
				}
				g.nodes = append(g.nodes, dotStmt{id: tk.text, attrs: attrs})
			}
		default:
			return nil, fmt.Errorf("token %d: unexpected %s %q", p, tk.kind, tk.text)
		}
		if peek().kind == ";" {
			p++
		}
	}
	p++
	if p != len(toks) {
		return nil, fmt.Errorf("%d tokens after the closing brace", len(toks)-p)
	}
	return g, nil
}

// escString interprets the escapes Graphviz applies to labels: \\ is a
// backslash and \n a line break.
func escString(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			switch s[i+1] {
			case '\\':
				b.WriteByte('\\')
				i++
				continue
			case 'n':
				b.WriteByte('\n')
				i++
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
