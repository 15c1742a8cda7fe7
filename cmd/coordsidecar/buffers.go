package main

import "sync"

// copyBufferSize is the size of the buffers bodies are copied through: what
// httputil.ReverseProxy allocates for each body when it has no BufferPool.
const copyBufferSize = 32 << 10

// buffers is the BufferPool of every ReverseProxy of the data plane: without
// one, ReverseProxy allocates a 32 KiB buffer for each response (and each
// streamed request body) it copies, which at 1,000 requests/s makes
// most of the proxy's garbage and so much of its CPU (the collector's).
type buffers struct{ pool sync.Pool }

func newBuffers() *buffers {
	return &buffers{pool: sync.Pool{New: func() any { return new([copyBufferSize]byte) }}}
}

func (b *buffers) Get() []byte { return b.pool.Get().(*[copyBufferSize]byte)[:] }

// Put takes back a buffer Get gave (any other size is left to the
// collector).
func (b *buffers) Put(buf []byte) {
	if len(buf) == copyBufferSize {
		b.pool.Put((*[copyBufferSize]byte)(buf))
	}
}
