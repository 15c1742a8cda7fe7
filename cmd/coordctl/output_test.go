package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func TestOutputFormatSet(t *testing.T) {
	for in, want := range map[string]outputFormat{"table": outputTable, "json": outputJSON, "JSON": outputJSON} {
		var o outputFormat
		if err := o.Set(in); err != nil || o != want {
			t.Errorf("Set(%q) = %v, %q; want nil, %q", in, err, o, want)
		}
	}
	var o outputFormat = outputTable
	err := o.Set("yaml")
	if err == nil || !strings.Contains(err.Error(), `"yaml"`) || !strings.Contains(err.Error(), "table, wide, json") {
		t.Errorf("Set(yaml) = %v, want an error naming yaml and the formats", err)
	}
	if o != outputTable {
		t.Errorf("failed Set changed the value to %q", o)
	}
}

func TestCell(t *testing.T) {
	for in, want := range map[string]string{"": "-", " ": "-", "a\tb": "a b", "a\nb\r": "a b ", "x": "x"} {
		if got := cell(in); got != want {
			t.Errorf("cell(%q) = %q, want %q", in, got, want)
		}
	}
}

// jsonFixtures are one response of every command, with every field kind.
func jsonFixtures() []proto.Message {
	return []proto.Message{
		testFreeness(),
		&coordinatorv1.Freeness{Service: "idle", Free: true},
		testGraph(),
		testSessions(),
		testTxns(),
		&coordinatorv1.ListTransactionsResponse{},
	}
}

func TestWriteJSONRoundTrip(t *testing.T) {
	for _, m := range jsonFixtures() {
		var buf bytes.Buffer
		if err := writeJSON(&buf, m); err != nil {
			t.Fatalf("writeJSON(%T): %v", m, err)
		}
		got := m.ProtoReflect().New().Interface()
		if err := protojson.Unmarshal(buf.Bytes(), got); err != nil {
			t.Fatalf("%T: output does not unmarshal: %v\n%s", m, err, buf.String())
		}
		if !proto.Equal(got, m) {
			t.Errorf("%T: round trip differs:\n got %v\nwant %v", m, got, m)
		}
	}
}

func TestWriteJSONFormat(t *testing.T) {
	var a, b bytes.Buffer
	if err := writeJSON(&a, testFreeness()); err != nil {
		t.Fatal(err)
	}
	if err := writeJSON(&b, testFreeness()); err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() {
		t.Errorf("output not stable:\n%s\n%s", a.String(), b.String())
	}
	out := a.String()
	if !strings.HasPrefix(out, "{\n  \"service\": \"orders\",\n") || !strings.HasSuffix(out, "}\n") {
		t.Errorf("not indented by two spaces or no final newline:\n%s", out)
	}
	// Default values are present, names are lowerCamelCase.
	var free bytes.Buffer
	if err := writeJSON(&free, &coordinatorv1.Freeness{Service: "idle", Free: false}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"free": false`, `"blocking": 0`, `"blockers": []`} {
		if !strings.Contains(free.String(), want) {
			t.Errorf("missing %s in\n%s", want, free.String())
		}
	}
	if !strings.Contains(out, `"txnId": "t-1"`) {
		t.Errorf("want proto JSON names (txnId):\n%s", out)
	}
}

func testFreeness() *coordinatorv1.Freeness {
	return &coordinatorv1.Freeness{
		Service:  "orders",
		Free:     false,
		Blocking: 3,
		Blockers: []*coordinatorv1.Blocker{
			{TxnId: "t-1", PastVersion: "v1", Running: true, FutureVia: "orders", Reason: "running in orders@v1"},
			{TxnId: "t-2", PastVersion: "v1", FutureVia: "gateway", Reason: "used orders@v1, can reach it from gateway"},
		},
	}
}

func testGraph() *coordinatorv1.Graph {
	return &coordinatorv1.Graph{
		LiveTransactions: 4,
		Services: []*coordinatorv1.ServiceNode{
			{Name: "gateway", Free: true, UsedBy: 2, Transactions: []string{"t-1", "t-2"},
				Versions: []*coordinatorv1.VersionSessions{{Version: "v1", Sessions: 2}}},
			{Name: "orders", Free: false, UsedBy: 3, Blocking: 2, Transactions: []string{"t-1", "t-2"},
				Versions: []*coordinatorv1.VersionSessions{{Version: "v1", Sessions: 1}, {Version: "v2", Sessions: 3}}},
			{Name: "audit", Free: true},
		},
		Edges: []*coordinatorv1.Edge{
			{From: "gateway", To: "orders"},
			{From: "orders", To: "audit", Learned: true},
		},
	}
}

var testRegistered = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testSessions() *coordinatorv1.ListSessionsResponse {
	return &coordinatorv1.ListSessionsResponse{Sessions: []*coordinatorv1.Session{
		{InstanceId: "orders-7f9c", Service: "orders", Version: "v2", Address: "10.0.0.7:8080", LeaseId: 7587,
			Ttl: durationpb.New(10 * time.Second), Connected: true, RegisteredAt: timestamppb.New(testRegistered), Roots: 4},
		{InstanceId: "audit-1", Service: "audit", Version: "v1", Ttl: durationpb.New(1500 * time.Millisecond)},
	}}
}

func testTxns() *coordinatorv1.ListTransactionsResponse {
	return &coordinatorv1.ListTransactionsResponse{
		Total: 5,
		Transactions: []*coordinatorv1.Transaction{
			{TxnId: "t-1", Entry: "gateway", Owner: "gateway-1",
				Used: []*coordinatorv1.ServiceVersion{{Service: "gateway", Version: "v1"}, {Service: "orders", Version: "v1"}},
				Running: []*coordinatorv1.SubTransaction{
					{Id: 1, Service: "gateway"},
					{Id: 18446744073709551615, Service: "orders", Done: []string{"audit", "billing"}},
				},
				Blocks: []string{"orders", "gateway"}},
			{TxnId: "t-2", Entry: "orders", Legacy: true, Implicit: true, LearnedEdge: true},
		},
	}
}
