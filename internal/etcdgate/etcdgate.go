// Package etcdgate wraps the clientv3.KV of an etcd client so that tests
// and benchmarks can hold, or delay, the writes under one key prefix (for
// example the update records) while every other request goes through as
// usual. It sits where the storage layer talks to etcd, so the code under
// test cannot tell it from a slow etcd.
package etcdgate

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// KV is a clientv3.KV whose writes that touch a key under Prefix (a Put, a
// Delete, or a Txn with such an op in Then or Else) wait while the gate is
// held, and for Delay, before they reach etcd. A write whose context ends
// first fails with the context's error, as a slow etcd would make it.
type KV struct {
	clientv3.KV
	prefix  string
	prefixB []byte // prefix, to match keys without copying them

	mu    sync.Mutex
	gate  chan struct{} // nil while open; closed by Release
	delay time.Duration

	waiting atomic.Int64 // matching writes waiting now
	matched atomic.Int64 // matching writes seen
}

// Wrap replaces cli.KV by a KV gating writes under prefix and returns it.
// Call it before anything uses cli.
func Wrap(cli *clientv3.Client, prefix string) *KV {
	k := New(cli.KV, prefix)
	cli.KV = k
	return k
}

// New wraps kv.
func New(kv clientv3.KV, prefix string) *KV {
	return &KV{KV: kv, prefix: prefix, prefixB: []byte(prefix)}
}

// Hold makes matching writes wait from now until Release.
func (k *KV) Hold() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.gate == nil {
		k.gate = make(chan struct{})
	}
}

// Release lets the held writes, and later ones, through.
func (k *KV) Release() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.gate != nil {
		close(k.gate)
		k.gate = nil
	}
}

// SetDelay delays every later matching write by d (0: none).
func (k *KV) SetDelay(d time.Duration) {
	k.mu.Lock()
	k.delay = d
	k.mu.Unlock()
}

// Waiting is the number of matching writes waiting at the gate or in
// their delay now.
func (k *KV) Waiting() int { return int(k.waiting.Load()) }

// Matched is the number of matching writes seen so far.
func (k *KV) Matched() int { return int(k.matched.Load()) }

// matches reports whether ops write under the prefix (reads never wait).
func (k *KV) matches(ops []clientv3.Op) bool {
	for _, op := range ops {
		// bytes.HasPrefix: a string conversion here allocated a copy of
		// every key written, in the measured process.
		if (op.IsPut() || op.IsDelete()) && bytes.HasPrefix(op.KeyBytes(), k.prefixB) {
			return true
		}
		if op.IsTxn() {
			_, then, els := op.Txn()
			if k.matches(then) || k.matches(els) {
				return true
			}
		}
	}
	return false
}

// wait blocks a matching write at the gate and for the delay.
func (k *KV) wait(ctx context.Context) error {
	k.matched.Add(1)
	k.waiting.Add(1)
	defer k.waiting.Add(-1)
	k.mu.Lock()
	gate, delay := k.gate, k.delay
	k.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Put waits if key is under the prefix.
func (k *KV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	if strings.HasPrefix(key, k.prefix) {
		if err := k.wait(ctx); err != nil {
			return nil, err
		}
	}
	return k.KV.Put(ctx, key, val, opts...)
}

// Delete waits if key is under the prefix.
func (k *KV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	if strings.HasPrefix(key, k.prefix) {
		if err := k.wait(ctx); err != nil {
			return nil, err
		}
	}
	return k.KV.Delete(ctx, key, opts...)
}

// Do waits if op is a write that matches.
func (k *KV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	if k.matches([]clientv3.Op{op}) {
		if err := k.wait(ctx); err != nil {
			return clientv3.OpResponse{}, err
		}
	}
	return k.KV.Do(ctx, op)
}

// Txn returns a transaction that waits at Commit if any of its ops matches.
func (k *KV) Txn(ctx context.Context) clientv3.Txn {
	return &txn{Txn: k.KV.Txn(ctx), kv: k, ctx: ctx}
}

type txn struct {
	clientv3.Txn
	kv    *KV
	ctx   context.Context
	match bool
}

func (t *txn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.Txn = t.Txn.If(cs...)
	return t
}

func (t *txn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.match = t.match || t.kv.matches(ops)
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *txn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.match = t.match || t.kv.matches(ops)
	t.Txn = t.Txn.Else(ops...)
	return t
}

func (t *txn) Commit() (*clientv3.TxnResponse, error) {
	if t.match {
		if err := t.kv.wait(t.ctx); err != nil {
			return nil, err
		}
	}
	return t.Txn.Commit()
}
