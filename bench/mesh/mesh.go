package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
)

// mesh is a layered acyclic service graph: layer 0 holds the entries
// (services that take requests from outside), and each service of a layer
// above the last calls 2 to 4 distinct services of lower layers, chosen
// uniformly among all of them. The last layer calls nothing.
type mesh struct {
	names   []string
	index   map[string]int
	layer   []int
	deps    [][]int // sorted
	callers [][]int // sorted
	layers  int
}

// newMesh builds a mesh of n services in the given number of layers (of
// equal size, within one), drawing edges from rng.
func newMesh(n, layers int, rng *rand.Rand) (*mesh, error) {
	if layers < 2 || n < 2*layers {
		return nil, fmt.Errorf("mesh: %d services in %d layers: want at least 2 layers of at least 2 services", n, layers)
	}
	m := &mesh{names: make([]string, n), index: make(map[string]int, n), layer: make([]int, n),
		deps: make([][]int, n), callers: make([][]int, n), layers: layers}
	width := len(fmt.Sprint(n - 1))
	first := make([]int, layers+1) // first[l]: first service of layer l
	for i := range n {
		m.names[i] = fmt.Sprintf("svc-%0*d", width, i)
		m.index[m.names[i]] = i
		m.layer[i] = i * layers / n
	}
	for i := n - 1; i >= 0; i-- {
		first[m.layer[i]] = i
	}
	first[layers] = n
	for i := range n {
		l := m.layer[i]
		if l == layers-1 {
			continue
		}
		lower := n - first[l+1]
		k := min(2+rng.IntN(3), lower)
		for _, j := range rng.Perm(lower)[:k] {
			m.deps[i] = append(m.deps[i], first[l+1]+j)
		}
		slices.Sort(m.deps[i])
		for _, d := range m.deps[i] {
			m.callers[d] = append(m.callers[d], i)
		}
	}
	for i := range m.callers {
		slices.Sort(m.callers[i])
	}
	return m, nil
}

// depNames are the services svc calls.
func (m *mesh) depNames(i int) []string {
	out := make([]string, len(m.deps[i]))
	for k, d := range m.deps[i] {
		out[k] = m.names[d]
	}
	return out
}

// reaching is the set of services from which t is reachable, t included.
func (m *mesh) reaching(t int) []bool {
	in := make([]bool, len(m.names))
	in[t] = true
	stack := []int{t}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, c := range m.callers[x] {
			if !in[c] {
				in[c] = true
				stack = append(stack, c)
			}
		}
	}
	return in
}

// entries are the services of layer 0.
func (m *mesh) entries() []int {
	var out []int
	for i, l := range m.layer {
		if l == 0 {
			out = append(out, i)
		}
	}
	return out
}

// targets picks the service the CV update moves (the one reachable from
// the most entries, among the layers between the first and the last, so
// that it is called and calls) and the one the NAIVE flips move (the one
// with the most callers among the others below layer 0).
func (m *mesh) targets() (cv, flip int) {
	cv, flip = -1, -1
	best := -1
	entries := m.entries()
	for i := range m.names {
		if m.layer[i] == 0 || (m.layers > 2 && m.layer[i] == m.layers-1) {
			continue
		}
		n := 0
		r := m.reaching(i)
		for _, e := range entries {
			if r[e] {
				n++
			}
		}
		if n > best {
			cv, best = i, n
		}
	}
	best = -1
	for i := range m.names {
		if m.layer[i] == 0 || i == cv {
			continue
		}
		if len(m.callers[i]) > best {
			flip, best = i, len(m.callers[i])
		}
	}
	return cv, flip
}

// instances names the sidecars: "svc@v1" of every service first, then
// "svc@v2" of the two targets, then further v1 instances ("svc@v1#2",
// "#3", ...) of the other services in turn until there are total. It
// fails when total cannot hold one v1 instance per service and the two v2.
func (m *mesh) instances(total, cv, flip int) ([]string, error) {
	n := len(m.names)
	if total < n+2 {
		return nil, fmt.Errorf("mesh: %d sidecars for %d services: want at least one per service and two more (v2 of the updated services)", total, n)
	}
	out := make([]string, 0, total)
	for _, name := range m.names {
		out = append(out, name+"@v1")
	}
	out = append(out, m.names[cv]+"@v2", m.names[flip]+"@v2")
	for k := 2; len(out) < total; k++ {
		for i, name := range m.names {
			if len(out) == total {
				break
			}
			if k == 2 && (i == cv || i == flip) {
				continue // already two instances
			}
			out = append(out, fmt.Sprintf("%s@v1#%d", name, k))
		}
	}
	return out, nil
}
