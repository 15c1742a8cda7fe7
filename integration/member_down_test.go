package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// downBound is how long a member down may keep the others from writing,
// and how long a SIGTERM'd member may take to exit.
const downBound = 5 * time.Second

// stopWithin sends SIGTERM and fails unless the process exits cleanly
// within d; it returns how long the exit took.
func (m *member) stopWithin(t *testing.T, d time.Duration) time.Duration {
	t.Helper()
	begin := time.Now()
	if err := m.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.exited:
		if err := m.exitErr(); err != nil {
			t.Fatalf("%s exit after SIGTERM: %v\n%s", m.name, err, m.stderr())
		}
		return time.Since(begin)
	case <-time.After(d):
		// Where it is stuck: Go prints every goroutine's stack on SIGQUIT.
		_ = m.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-m.exited:
		case <-time.After(5 * time.Second):
		}
		t.Fatalf("%s did not exit within %v of SIGTERM (its goroutines on SIGQUIT at the end)\n%s", m.name, d, m.stderr())
		return 0
	}
}

// settled waits until the three members are healthy, a replica leads
// the coordinator, and Raft is led by another member than the leading
// replica's (the leader hands it off); it returns the names of the
// coordinator's leader and of the Raft leader.
func settled(t *testing.T, members []*member) (coordLeader, raftLeader string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := "no cluster view"
	for time.Now().Before(deadline) {
		for _, m := range members {
			v := clusterView(t, m.addr())
			if v == nil {
				continue
			}
			coordLeader, raftLeader = v.GetLeader().GetName(), ""
			healthy := 0
			for _, em := range v.Members {
				if em.Healthy {
					healthy++
				}
				if em.RaftLeader {
					raftLeader = em.Name
				}
			}
			if healthy == 3 && coordLeader != "" && raftLeader != "" && raftLeader != coordLeader {
				return coordLeader, raftLeader
			}
			last = fmt.Sprintf("%d healthy members, coordinator leader %q, Raft leader %q", healthy, coordLeader, raftLeader)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the cluster did not settle within 30 s: %s", last)
	return "", ""
}

// TestEachMemberDownInTurn stops (SIGTERM), and separately kills
// (SIGKILL), each member in turn: the one leading Raft, the one leading
// the coordinator, and the third. Each time the stopped member exits
// within 5 s, and a Put through each survivor succeeds within 5 s of the
// member being gone; then the member restarts on its data dir and the
// cluster settles again before the next one goes down.
func TestEachMemberDownInTurn(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three coordinatord")
	}
	bin := buildBinary(t, "cmd/coordinatord")
	members := startThreeMembers(t, bin)
	byName := map[string]*member{}
	for _, m := range members {
		byName[m.name] = m
	}
	for _, how := range []string{"stop", "kill"} {
		for _, role := range []string{"raft-leader", "coordinator-leader", "other"} {
			coordLeader, raftLeader := settled(t, members)
			var victim *member
			switch role {
			case "raft-leader":
				victim = byName[raftLeader]
			case "coordinator-leader":
				victim = byName[coordLeader]
			default:
				for _, m := range members {
					if m.name != raftLeader && m.name != coordLeader {
						victim = m
					}
				}
			}
			if victim == nil {
				t.Fatalf("%s %s: no member named %q or %q", how, role, coordLeader, raftLeader)
			}
			if how == "stop" {
				took := victim.stopWithin(t, downBound)
				t.Logf("%s %s (%s): exited %v after SIGTERM", how, role, victim.name, took.Round(time.Millisecond))
			} else {
				victim.kill()
			}
			gone := time.Now()
			for _, m := range members {
				if m != victim {
					putWithin(t, m, gone, fmt.Sprintf("%s %s (%s)", how, role, victim.name), how == "kill")
				}
			}
			if role == "coordinator-leader" {
				survivorsNameANewLeader(t, members, victim, gone, fmt.Sprintf("%s %s (%s)", how, role, victim.name))
			}
			victim.launch(t, bin)
			if err := waitServing([]*member{victim}); err != nil {
				t.Fatalf("%s %s: restart of %s: %v", how, role, victim.name, err)
			}
		}
	}
	coordLeader, raftLeader := settled(t, members)
	t.Logf("settled after every member was down once each way: coordinator led by %s, Raft by %s", coordLeader, raftLeader)
}

// putAttempt bounds one Put after a kill: a write that a survivor had
// forwarded to the Raft leader just killed is lost with it, and etcd
// reports that only at its request timeout (7 s); a client tries again.
const putAttempt = time.Second

// putWithin puts a key through member m and fails unless that succeeds
// within downBound of gone. After a stop the first Put must succeed: the
// stopping member handed Raft leadership over before it went. After a kill,
// Puts are tried each for putAttempt until one succeeds: the Raft leader
// may have died with a Put forwarded to it, and the others first elect a
// new one (etcd's election timeout is 1 s).
func putWithin(t *testing.T, m *member, gone time.Time, what string, retry bool) {
	t.Helper()
	cli := etcdClient(t, "http://"+m.etcdClient)
	deadline := gone.Add(downBound)
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		if retry {
			ctx, cancel = context.WithTimeout(ctx, putAttempt)
		}
		_, err := cli.Put(ctx, "member-down/"+what+"/"+m.name, "x")
		cancel()
		took := time.Since(gone).Round(time.Millisecond)
		if err == nil {
			t.Logf("%s: Put via %s succeeded %v after the member was gone (attempt %d)", what, m.name, took, attempt)
			return
		}
		if !retry || time.Now().After(deadline) {
			t.Fatalf("%s: Put via %s: %v (%v after the member was gone, attempt %d)", what, m.name, err, took, attempt)
		}
		t.Logf("%s: Put via %s attempt %d: %v (%v after the member was gone)", what, m.name, attempt, err, took)
	}
}

// survivorsNameANewLeader waits until every member but the victim names
// (in /health) the same live leader, not the victim,: a follower must not go on sending
// sidecars to a dead leader once another leads. Each replica watches the
// election through its own etcd member, so a dead member takes no watch
// with it.
func survivorsNameANewLeader(t *testing.T, members []*member, victim *member, gone time.Time, what string) {
	t.Helper()
	deadline := gone.Add(15 * time.Second)
	for {
		names := map[string]bool{}
		for _, m := range members {
			if m == victim {
				continue
			}
			names[healthLeader(m)] = true
		}
		if len(names) == 1 && !names[""] && !names[victim.addr()] {
			for n := range names {
				t.Logf("%s: both survivors name %s as the leader %v after the leader was gone", what, n, time.Since(gone).Round(time.Millisecond))
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: survivors name %v as the leader 15 s after the leader was gone", what, names)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// healthLeader is the leader's gRPC address as m's /health names it ("" if
// none or no answer).
func healthLeader(m *member) string {
	m.mu.Lock()
	addr := m.httpAddr
	m.mu.Unlock()
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get("http://" + addr + "/health")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var h struct{ Leader string }
	if json.NewDecoder(resp.Body).Decode(&h) != nil {
		return ""
	}
	return h.Leader
}
