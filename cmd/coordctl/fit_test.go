package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// Long names, versions, addresses and reasons are cut or wrapped so that
// service NAME, history and update --dry-run fit an 80-column terminal by
// default; -o wide keeps every value whole.
func TestLongValuesFitATerminal(t *testing.T) {
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	name := "auth-service-of-the-payments-team-in-the-eu-west-region"
	v1, v2 := "2026.12.03-rc1+build.4711.abcdef0123456789", "2026.12.04+build.4712.fedcba9876543210"
	inst := "auth-service-of-the-payments-team-v2-7f9c8d6b5-x2k4q"
	addr := "auth-service-v2.payments.svc.cluster.local:8443"
	txn := strings.Repeat("0123456789abcdef", 5)
	reason := strings.Repeat("the previous version's instances went away while it drained, ", 3)
	upd := func(id string, phase coordinatorv1.Phase, from, to string) *coordinatorv1.Update {
		return &coordinatorv1.Update{Id: id, Service: name, FromVersion: from, ToVersion: to, Phase: phase,
			Strategy: coordinatorv1.Strategy_STRATEGY_NAIVE, Reason: reason,
			CreatedAt: timestamppb.New(now.Add(-time.Hour)), FinishedAt: timestamppb.New(now.Add(-59 * time.Minute)),
			Progress: &coordinatorv1.UpdateProgress{WaitingFor: reason}}
	}
	s := &coordinatorv1.ServiceState{Name: name, DefaultVersion: v1, Blocking: 1234, LiveTransactions: 123456, ResyncMissing: 3,
		Versions: []*coordinatorv1.VersionState{
			{Version: v1, Default: true, Instances: 1, Connected: 1, LiveTransactions: 123456, Transactions: []string{txn},
				InstanceList: []*coordinatorv1.Instance{{InstanceId: inst, Address: addr, Connected: true, RegisteredAt: timestamppb.New(now)}}},
			{Version: v2, Instances: 1, InstanceList: []*coordinatorv1.Instance{{InstanceId: inst + "-2", Address: addr}}},
		},
		Update:     upd("20261203T000000-abcdef01", coordinatorv1.Phase_PHASE_DRAINING, v1, v2),
		LastUpdate: upd("20261202T000000-abcdef01", coordinatorv1.Phase_PHASE_ABORTED, v2, v1),
	}
	history := &coordinatorv1.ListUpdatesResponse{Updates: []*coordinatorv1.Update{s.Update, s.LastUpdate}}
	plan := &coordinatorv1.UpdatePlan{Service: name, FromVersion: v1, ToVersion: v2, Strategy: coordinatorv1.Strategy_STRATEGY_BF,
		Refused: reason, TargetInstances: 1, Blocking: 1, ResyncMissing: 3, CallerSessions: 12,
		Timeout: durationpb.New(time.Hour), MaxBlock: durationpb.New(90 * time.Second), PrepareTimeout: durationpb.New(2 * time.Minute),
		Blockers:    []*coordinatorv1.Blocker{{TxnId: txn, PastVersion: v1, Running: true, FutureVia: name, Reason: reason}},
		Constraints: []string{reason, reason}, InProgress: s.Update}

	for _, wide := range []bool{false, true} {
		renders := map[string]func(*bytes.Buffer) error{
			"service":          func(b *bytes.Buffer) error { return renderService(b, s, wide, now) },
			"history":          func(b *bytes.Buffer) error { return renderHistory(b, name, history, wide, now) },
			"update --dry-run": func(b *bytes.Buffer) error { return renderPlan(b, plan, wide, now) },
		}
		for what, render := range renders {
			var out bytes.Buffer
			if err := render(&out); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if !wide {
				fitsTerminal(t, what, out.String())
				continue
			}
			// -o wide cuts and wraps nothing.
			for _, whole := range []string{name, v2} {
				if what == "history" && whole == name {
					continue // history lists one service, named in the command
				}
				if !strings.Contains(out.String(), whole) {
					t.Errorf("%s -o wide: %q cut in\n%s", what, whole, out.String())
				}
			}
		}
	}
}
