package memstore_test

import (
	"testing"

	"github.com/coordinator/coordinator/storage"
	"github.com/coordinator/coordinator/storage/memstore"
	"github.com/coordinator/coordinator/storage/storetest"
)

// The memory store passes the conformance suite the Etcd store passes.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		st := memstore.New(memstore.Options{Prefix: "/conformance/"})
		t.Cleanup(st.Close)
		return storetest.Harness{Store: st, Fence: func(*testing.T) { st.Fence() }}
	})
}

var _ storage.Store = (*memstore.Store)(nil)
