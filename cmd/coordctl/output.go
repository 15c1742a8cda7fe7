package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// outputFormat is the value of -o/--output.
type outputFormat string

const (
	outputTable outputFormat = "table"
	// outputWide is table with every column and no cell cut short;
	// commands without a wide form print their table.
	outputWide outputFormat = "wide"
	outputJSON outputFormat = "json"
)

var outputFormats = []outputFormat{outputTable, outputWide, outputJSON}

// termWidth is the width tables fit by default (not -o wide).
const termWidth = 80

func (o *outputFormat) String() string { return string(*o) }

// Set implements pflag.Value; an unknown format is a flag error.
func (o *outputFormat) Set(s string) error {
	for _, f := range outputFormats {
		if strings.EqualFold(s, string(f)) {
			*o = f
			return nil
		}
	}
	names := make([]string, len(outputFormats))
	for i, f := range outputFormats {
		names[i] = string(f)
	}
	return fmt.Errorf("unknown output format %q, must be one of: %s", s, strings.Join(names, ", "))
}

func (o *outputFormat) Type() string { return "format" }

// wide says whether tables show every column, uncut (-o wide).
func (c *cli) wide() bool { return c.opts.output == outputWide }

// print writes m in the chosen output format: as JSON, or through table.
func (c *cli) print(m proto.Message, table func(io.Writer) error) error {
	if c.opts.output == outputJSON {
		return writeJSON(c.stdout, m)
	}
	return table(c.stdout)
}

// writeJSON writes the protojson form of m, indented by two spaces and
// ending in a newline. Fields keep their proto JSON names (lowerCamelCase, as
// the REST gateway) and default values are included, so that "free": false
// or "blocking": 0 are present. protojson randomises its whitespace on
// purpose; the output is re-indented so that it is byte-for-byte stable.
func writeJSON(w io.Writer, m proto.Message) error {
	raw, err := protojson.MarshalOptions{EmitDefaultValues: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	out.WriteByte('\n')
	_, err = w.Write(out.Bytes())
	return err
}

// writeJSONLine writes the protojson form of m on one line.
func writeJSONLine(w io.Writer, m proto.Message) error {
	raw, err := protojson.MarshalOptions{EmitDefaultValues: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	var line bytes.Buffer
	if err := json.Compact(&line, raw); err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	line.WriteByte('\n')
	_, err = w.Write(line.Bytes())
	return err
}

// table writes aligned columns with text/tabwriter. Cells are sanitised so a
// tab or newline in a value cannot break the layout; empty cells show "-".
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, headers ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)}
	t.row(headers...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if i > 0 {
			io.WriteString(t.tw, "\t")
		}
		io.WriteString(t.tw, cell(c))
	}
	io.WriteString(t.tw, "\n")
}

func (t *table) flush() error { return t.tw.Flush() }

// cell makes s fit in one table cell.
func cell(s string) string {
	s = strings.Map(func(r rune) rune {
		switch r {
		case '\t', '\n', '\r', '\v', '\f':
			return ' '
		}
		return r
	}, s)
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}

// fit cuts s to at most n characters, ending it in "~" when cut, so that a
// table of cells cut so fits a terminal; n <= 0 leaves s whole (-o wide).
func fit(s string, n int) string {
	r := []rune(s)
	if n <= 0 || len(r) <= n {
		return s
	}
	if n == 1 {
		return "~"
	}
	return string(r[:n-1]) + "~"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// formatDuration renders a proto duration, or "" when unset.
func formatDuration(d *durationpb.Duration) string {
	if d == nil {
		return ""
	}
	return d.AsDuration().String()
}

// formatTime renders a proto timestamp in UTC (RFC 3339), or "" when unset.
func formatTime(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

// plural returns "1 thing" or "n things".
func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// writeField writes "Label:   value", the label padded to labelWidth and
// the value wrapped under itself to width (0: one line).
func writeField(w io.Writer, labelWidth int, label, value string, width int) {
	first := fmt.Sprintf("%-*s ", labelWidth, label+":")
	for _, l := range wrap(cell(value), width, first, strings.Repeat(" ", len(first))) {
		fmt.Fprintln(w, l)
	}
}

// wrap breaks s at spaces into lines of at most width characters (0: one
// line), the first starting with first, the others with rest. A word
// longer than a line is cut.
func wrap(s string, width int, first, rest string) []string {
	if width <= 0 {
		return []string{first + s}
	}
	var lines []string
	cur := first
	empty := true
	for _, word := range strings.Fields(s) {
		if !empty && len([]rune(cur))+1+len([]rune(word)) > width {
			lines = append(lines, cur)
			cur, empty = rest, true
		}
		if !empty {
			cur += " "
		}
		cur += word
		empty = false
	}
	lines = append(lines, cur)
	for i, l := range lines {
		lines[i] = fit(l, width)
	}
	return lines
}
