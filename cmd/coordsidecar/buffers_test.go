package main

import "testing"

// The copy buffers are recycled whole; a buffer of another size is not
// taken (ReverseProxy would then copy through a short one).
func TestBuffers(t *testing.T) {
	b := newBuffers()
	buf := b.Get()
	if len(buf) != copyBufferSize {
		t.Fatalf("Get gave %d bytes, want %d", len(buf), copyBufferSize)
	}
	b.Put(buf)
	b.Put(make([]byte, 10))
	for range 100 {
		if got := b.Get(); len(got) != copyBufferSize {
			t.Fatalf("Get after a short Put gave %d bytes", len(got))
		}
	}
}
