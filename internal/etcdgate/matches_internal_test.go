package etcdgate

import (
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestMatchingAllocatesNothing: the gate sits in the measured process of
// bench/ingest -update-cycle, on every write-behind transaction; telling
// whether a transaction's ops match must not copy their keys (keys as long
// as the coordinator's: a shorter conversion may stay on the stack).
func TestMatchingAllocatesNothing(t *testing.T) {
	k := New(nil, "/coordinator/updates/")
	ops := []clientv3.Op{
		clientv3.OpPut("/coordinator/pins/svc-e/g3-0123456789abcdef/00000000000000000042", "x"),
		clientv3.OpDelete("/coordinator/txns/g3-0123456789abcdef/svc-a-3/0000000000000007"),
		clientv3.OpPut("/coordinator/updates/u-1", "x"),
	}
	if n := testing.AllocsPerRun(100, func() {
		if !k.matches(ops) || k.matches(ops[:2]) {
			t.Fatal("wrong match")
		}
	}); n != 0 {
		t.Fatalf("%.0f allocations to match 5 ops, want 0", n)
	}
}
