package main

import (
	"bytes"
	"testing"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func TestRenderTxns(t *testing.T) {
	var buf bytes.Buffer
	if err := renderTxns(&buf, testTxns()); err != nil {
		t.Fatal(err)
	}
	want := `TXN  ENTRY    OWNER      FLAGS                    USED                  RUNNING                                                    BLOCKS
t-1  gateway  gateway-1  -                        gateway@v1,orders@v1  gateway#1,orders#18446744073709551615(done:audit+billing)  orders,gateway
t-2  orders   -          legacy,implicit,learned  -                     -                                                          -

Total: 5 live transactions (showing 2; raise --limit to see more)
`
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestRenderTxnsEmpty(t *testing.T) {
	var buf bytes.Buffer
	if err := renderTxns(&buf, &coordinatorv1.ListTransactionsResponse{}); err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != "Total: 0 live transactions\n" {
		t.Errorf("got %q", got)
	}
	buf.Reset()
	one := &coordinatorv1.ListTransactionsResponse{Total: 1, Transactions: []*coordinatorv1.Transaction{{TxnId: "x", Entry: "e"}}}
	if err := renderTxns(&buf, one); err != nil {
		t.Fatal(err)
	}
	want := "TXN  ENTRY  OWNER  FLAGS  USED  RUNNING  BLOCKS\nx    e      -      -      -     -        -\n\nTotal: 1 live transaction\n"
	if got := buf.String(); got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
}
