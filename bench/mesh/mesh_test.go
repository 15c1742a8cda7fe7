package main

import (
	"context"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMain lets the smoke test's coordinator child (this test binary
// re-executed by benchproc with "-serve DIR") run as the bench's does.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == "-serve" {
		runCoordinator(os.Args[2])
		return
	}
	os.Exit(m.Run())
}

// The mesh is layered and acyclic: each service above the last layer calls
// 2 to 4 distinct services of lower layers, and the same seed gives the
// same mesh.
func TestMeshShape(t *testing.T) {
	m, err := newMesh(1000, 5, rand.New(rand.NewPCG(42, 0)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.names {
		if m.layer[i] == m.layers-1 {
			if len(m.deps[i]) != 0 {
				t.Fatalf("%s in the last layer calls %v", m.names[i], m.deps[i])
			}
			continue
		}
		if n := len(m.deps[i]); n < 2 || n > 4 {
			t.Fatalf("%s calls %d services", m.names[i], n)
		}
		for k, d := range m.deps[i] {
			if m.layer[d] <= m.layer[i] || (k > 0 && m.deps[i][k-1] == d) {
				t.Fatalf("%s (layer %d) calls %s (layer %d): not a distinct lower service", m.names[i], m.layer[i], m.names[d], m.layer[d])
			}
		}
	}
	again, _ := newMesh(1000, 5, rand.New(rand.NewPCG(42, 0)))
	for i := range m.deps {
		if !slices.Equal(m.deps[i], again.deps[i]) {
			t.Fatalf("seed 42 gave two meshes: %s calls %v, then %v", m.names[i], m.deps[i], again.deps[i])
		}
	}
	cv, flip := m.targets()
	if cv == flip || m.layer[cv] == 0 || m.layer[flip] == 0 || len(m.callers[flip]) == 0 {
		t.Fatalf("targets %d and %d", cv, flip)
	}
	insts, err := m.instances(2000, cv, flip)
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for _, in := range insts {
		svc, _, _ := strings.Cut(in, "@")
		per[svc]++
	}
	if len(insts) != 2000 || len(per) != 1000 || !slices.Contains(insts, m.names[cv]+"@v2") || !slices.Contains(insts, m.names[flip]+"@v2") {
		t.Fatalf("%d instances of %d services", len(insts), len(per))
	}
	for svc, n := range per {
		if n != 2 {
			t.Fatalf("%s has %d instances, want 2", svc, n)
		}
	}
	if _, err := m.instances(1001, cv, flip); err == nil {
		t.Fatal("1001 sidecars for 1000 services and two v2 instances: no error")
	}
}

// A tiny mesh goes through every phase: a smoke test of the benchmark, not
// a measure (no figure is asserted but the oracle's).
func TestSmallMeshRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a coordinator")
	}
	settleQuiet = 200 * time.Millisecond
	o := options{sidecars: 14, services: 9, layers: 3, seed: 7, workers: 8, rate: 200, fanout: 2, maxCalls: 8, maxMS: 5,
		duration: 2 * time.Second, idle: 300 * time.Millisecond, flips: 2, flipsBudget: time.Minute, naive: true,
		registerTimeout: time.Minute, phaseTimeout: time.Minute}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	line := r.line()
	t.Log(r.naiveLine)
	t.Log(line)
	if strings.Contains(line, "timeout") || strings.Contains(line, "skipped") || !strings.HasSuffix(line, " violations=0") {
		t.Fatalf("line %q", line)
	}
}
