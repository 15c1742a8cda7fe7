package graph

import (
	"fmt"
	"testing"
)

// bytePicker takes runModelWith's choices from the bytes of a fuzz input,
// so that the fuzzer steers the event sequence; once they run out every
// choice is 0, and the run stops.
type bytePicker struct {
	b []byte
	i int
}

func (p *bytePicker) next() byte {
	if p.i >= len(p.b) {
		p.i++
		return 0
	}
	p.i++
	return p.b[p.i-1]
}

func (p *bytePicker) IntN(n int) int {
	if n <= 256 {
		return int(p.next()) % n
	}
	return (int(p.next())<<8 | int(p.next())) % n
}

func (p *bytePicker) Float64() float64 { return float64(p.next()) / 256 }

// FuzzEngineModel decodes a fuzz input into a static graph and a sequence
// of engine events, valid ones and ones the engine must reject, applies
// them to the engine and to the model of DESIGN.md §2's rules, and checks
// after every step what TestModel checks: hasFuture, hasPast, used, free and
// blockers against the model (soundness on cyclic graphs), the rejected
// events' errors and that they change nothing, and the write-behind records.
// It must never panic.
func FuzzEngineModel(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 0, 0, 128, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	f.Add([]byte("a small acyclic graph with a handful of transactions and done hints, and a few bad events"))
	f.Add([]byte{8, 9, 1, 200, 17, 33, 44, 90, 0, 0, 7, 7, 7, 7, 250, 4, 3, 2, 1, 0, 99, 98, 97, 96, 95, 94, 93, 92})
	for seed := range 8 {
		b := make([]byte, 256)
		for i := range b {
			b[i] = byte(i*(seed*2+1) + seed*37)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			data = data[:4096] // a few hundred steps is plenty; keep each run short
		}
		p := &bytePicker{b: data}
		runModelWith(t, p, fmt.Sprintf("input %x", data), 400, func() bool { return p.i < len(p.b) }, true)
	})
}
