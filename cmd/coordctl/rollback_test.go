package main

import (
	"strings"
	"testing"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func service(def string, versions ...*coordinatorv1.VersionState) *coordinatorv1.ServiceState {
	return &coordinatorv1.ServiceState{Name: "auth-service", DefaultVersion: def, Versions: versions}
}

func TestSoleOtherVersion(t *testing.T) {
	v1 := &coordinatorv1.VersionState{Version: "v1", Default: true, Instances: 2, Connected: 2}
	v2 := &coordinatorv1.VersionState{Version: "v2", Instances: 1, Connected: 1}
	gone := &coordinatorv1.VersionState{Version: "v0", LiveTransactions: 3} // used, no instance: not registered
	if v, err := soleOtherVersion(service("v1", gone, v1, v2)); err != nil || v != "v2" {
		t.Fatalf("one other version: %q, %v", v, err)
	}
	_, err := soleOtherVersion(service("v1", gone, v1))
	if !isUsageError(err) || !strings.Contains(err.Error(), "no registered version other than its default v1 (registered: v1 (default, 2 instances))") {
		t.Fatalf("none: %v", err)
	}
	_, err = soleOtherVersion(service("v1", v1, v2, &coordinatorv1.VersionState{Version: "v3", Instances: 1}))
	if !isUsageError(err) || !strings.Contains(err.Error(), "has 2 registered versions other than its default v1 (registered: v1 (default, 2 instances), v2 (1 instance), v3 (1 instance)); pick one with --to") {
		t.Fatalf("several: %v", err)
	}
}

func TestRollbackOf(t *testing.T) {
	done := func(id, from, to string) *coordinatorv1.Update {
		return &coordinatorv1.Update{Id: id, FromVersion: from, ToVersion: to, Phase: coordinatorv1.Phase_PHASE_DONE,
			Strategy: coordinatorv1.Strategy_STRATEGY_WF}
	}
	aborted := &coordinatorv1.Update{Id: "u3", FromVersion: "v2", ToVersion: "v3", Phase: coordinatorv1.Phase_PHASE_ABORTED}
	history := []*coordinatorv1.Update{aborted, done("u2", "v1", "v2"), done("u1", "v0", "v1")}
	v1 := &coordinatorv1.VersionState{Version: "v1", Instances: 1, Connected: 1}
	v2 := &coordinatorv1.VersionState{Version: "v2", Default: true, Instances: 1, Connected: 1}
	if u, err := rollbackOf(service("v2", v1, v2), history); err != nil || u.GetId() != "u2" {
		t.Fatalf("rollback of v2: %v, %v; want u2 (the aborted u3 changed nothing)", u, err)
	}
	if _, err := rollbackOf(service("v2", v2), history); err == nil || !strings.Contains(err.Error(), "no instance of auth-service@v1 is registered") {
		t.Fatalf("no instance of v1: %v", err)
	}
	down := &coordinatorv1.VersionState{Version: "v1", Instances: 2}
	if _, err := rollbackOf(service("v2", down, v2), history); err == nil || !strings.Contains(err.Error(), "none of its 2 instances is connected") {
		t.Fatalf("v1 not connected: %v", err)
	}
	if _, err := rollbackOf(service("v2", v1, v2), []*coordinatorv1.Update{aborted}); err == nil || !strings.Contains(err.Error(), "nothing to roll back") {
		t.Fatalf("no DONE update: %v", err)
	}
	busy := service("v2", v1, v2)
	busy.Update = &coordinatorv1.Update{Id: "u4", Phase: coordinatorv1.Phase_PHASE_WAITING}
	if _, err := rollbackOf(busy, history); err == nil || !strings.Contains(err.Error(), "coordctl abort u4") {
		t.Fatalf("during an update: %v", err)
	}
}
