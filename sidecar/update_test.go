package sidecar_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/sidecar"
)

// seedWorld runs the seed scenario over HTTP: Portal gets a token from Auth
// (T1), then has Proc process the request (T2); Proc checks the token with
// Auth (T3), then reads DB (T4). Auth's tokens are valid only on the version
// that issued them. With hints, Portal says it is done with Auth when T1
// returns and with Proc once T2 runs, and Proc that it is done with Auth
// when T3 returns. A request with ?pause=1 stops at moment C (between T1
// and T2) and at moment D (T3 returned, T2 running) until the test says go.
type seedWorld struct {
	ts                 *servertest.Server
	portal, proc, auth *service
	authH              func(*service, http.ResponseWriter, *http.Request)
	atC, atD           chan sidecar.Txn
	goC, goD           chan struct{}
	mu                 sync.Mutex
	authVersions       map[string][]string // txn -> versions of auth it ran on
}

func newSeedWorld(t *testing.T, hints bool) *seedWorld {
	w := &seedWorld{ts: servertest.Start(t, ""), authVersions: map[string][]string{},
		atC: make(chan sidecar.Txn, 1), atD: make(chan sidecar.Txn, 1), goC: make(chan struct{}), goD: make(chan struct{})}
	w.authH = func(s *service, rw http.ResponseWriter, r *http.Request) {
		tx, _ := sidecar.FromContext(r.Context())
		w.mu.Lock()
		w.authVersions[tx.ID] = append(w.authVersions[tx.ID], s.version)
		w.mu.Unlock()
		if tok := r.URL.Query().Get("token"); tok != "" && tok != s.version+"."+tx.ID {
			http.Error(rw, "token of another version", http.StatusUnauthorized)
			return
		}
		fmt.Fprint(rw, s.version+"."+tx.ID)
	}
	w.auth = startService(t, w.ts, "auth", "v1", nil, w.authH)
	startService(t, w.ts, "db", "v1", nil, func(_ *service, rw http.ResponseWriter, _ *http.Request) { fmt.Fprint(rw, "row") })
	procRuns := make(chan struct{}, 1)
	w.proc = startService(t, w.ts, "proc", "v1", []string{"auth", "db"}, func(s *service, rw http.ResponseWriter, r *http.Request) {
		procRuns <- struct{}{}
		if _, err := s.get(r, "http://auth/validate?token="+r.URL.Query().Get("token")); err != nil {
			http.Error(rw, err.Error(), http.StatusBadGateway)
			return
		}
		if hints {
			sidecar.Done(r.Context(), "auth")
		}
		if r.URL.Query().Get("pause") != "" {
			tx, _ := sidecar.FromContext(r.Context())
			w.atD <- tx
			<-w.goD
		}
		relay("http://db/")(s, rw, r)
	})
	w.portal = startService(t, w.ts, "portal", "v1", []string{"auth", "proc"}, func(s *service, rw http.ResponseWriter, r *http.Request) {
		tok, err := s.get(r, "http://auth/token")
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadGateway)
			return
		}
		pause := r.URL.Query().Get("pause")
		if hints {
			sidecar.Done(r.Context(), "auth")
		}
		if pause != "" {
			tx, _ := sidecar.FromContext(r.Context())
			w.atC <- tx
			<-w.goC
		}
		t2 := make(chan error, 1)
		go func() {
			_, err := s.get(r, "http://proc/?pause="+pause+"&token="+tok)
			t2 <- err
		}()
		select {
		case <-procRuns: // T2 runs: its CALL was queued before it was sent
			if hints {
				sidecar.Done(r.Context(), "proc")
			}
			err = <-t2
		case err = <-t2:
			select {
			case <-procRuns: // proc ran, and is over
			default:
			}
		}
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprint(rw, "ok")
	})
	return w
}

func (w *seedWorld) request(ctx context.Context, query string) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := get(ctx, http.DefaultClient, "http://"+w.portal.addr+"/"+query, nil)
		done <- err
	}()
	return done
}

// hints lists the done hints of x's running sub-transactions, sorted, as
// "service:done".
func hints(x *pb.Transaction) []string {
	var out []string
	for _, s := range x.GetRunning() {
		for _, d := range s.Done {
			out = append(out, s.Service+":"+d)
		}
	}
	slices.Sort(out)
	return out
}

// The seed's moments C and D (DESIGN.md §1) through Middleware and
// Transport: Auth is not free at C either way; at D it is free only with
// the done hints.
func TestDoneHintsMakeAuthFreeAtMomentD(t *testing.T) {
	for _, withHints := range []bool{true, false} {
		t.Run(fmt.Sprintf("hints=%v", withHints), func(t *testing.T) {
			w := newSeedWorld(t, withHints)
			ctx, cancel := context.WithTimeout(context.Background(), within)
			defer cancel()
			done := w.request(ctx, "?pause=1")

			root := <-w.atC
			wantHints := []string(nil)
			if withHints {
				wantHints = []string{"portal:auth"}
			}
			servertest.Eventually(t, within, "moment C at the coordinator", func() bool {
				x := txn(w.ts, root.ID)
				return slices.Equal(running(x), subs("portal", root.Sub)) && slices.Contains(used(x), "auth@v1") &&
					slices.Equal(hints(x), wantHints)
			})
			if w.ts.FreeREST("auth").Free {
				t.Fatal("auth free at moment C: Proc may still call it")
			}

			close(w.goC)
			t2 := <-w.atD
			if withHints {
				wantHints = []string{"portal:auth", "portal:proc", "proc:auth"}
			}
			servertest.Eventually(t, within, "moment D at the coordinator", func() bool {
				x := txn(w.ts, root.ID)
				return slices.Equal(running(x), subs("portal", root.Sub, "proc", t2.Sub)) && slices.Equal(hints(x), wantHints)
			})
			if free := w.ts.FreeREST("auth").Free; free != withHints {
				t.Fatalf("auth free at moment D = %v, want %v", free, withHints)
			}

			close(w.goD)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			servertest.Eventually(t, within, "the end", func() bool { return w.ts.Txns("").Total == 0 })
			noRejections(t, w.portal.client, w.proc.client, w.auth.client)
		})
	}
}

// The seed scenario with a CV update of Auth between T1 and T3 of a
// request: that request stays on Auth v1 (its token validates), a request
// begun after the switch runs on v2 only, and the update completes.
func TestCVUpdateThroughHTTPKeepsTransactionsConsistent(t *testing.T) {
	w := newSeedWorld(t, true)
	startService(t, w.ts, "auth", "v2", nil, w.authH)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	spanning := w.request(ctx, "?pause=1")
	root := <-w.atC

	u, err := w.ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "auth", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Eventually(t, within, "the switch", func() bool {
		g, err := w.ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		return err == nil && g.Phase == pb.Phase_PHASE_DRAINING
	})
	if err := <-w.request(ctx, ""); err != nil {
		t.Fatalf("request after the switch: %v", err)
	}
	close(w.goC)
	<-w.atD
	close(w.goD)
	if err := <-spanning; err != nil {
		t.Fatalf("request spanning the switch: %v", err)
	}
	servertest.Eventually(t, within, "the update to finish", func() bool {
		g, err := w.ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		return err == nil && g.Phase == pb.Phase_PHASE_DONE
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	if got := w.authVersions[root.ID]; !slices.Equal(got, []string{"v1", "v1"}) {
		t.Fatalf("the spanning request ran on auth %v, want v1 twice", got)
	}
	if len(w.authVersions) != 2 {
		t.Fatalf("auth served %v, want two transactions", w.authVersions)
	}
	for id, vs := range w.authVersions {
		if id != root.ID && !slices.Equal(vs, []string{"v2", "v2"}) {
			t.Fatalf("the request after the switch ran on auth %v, want v2 twice", vs)
		}
	}
	noRejections(t, w.portal.client, w.proc.client)
}

// While back is in update mode with BF, a call of a transaction that has
// not used back waits for the coordinator's decision: it is held until
// back is free, then released to v2; a call of a transaction that used it
// is decided at once, to v1; a waiting call whose context ends returns at
// once with the context's error, and when the coordinator later applies it
// the client reports its return.
func TestWaitingCallsInUpdateMode(t *testing.T) {
	ts := servertest.Start(t, "")
	ts.Sidecar("back-v1", "back", "v1")
	ts.Sidecar("back-v2", "back", "v2")
	c := startClient(t, ts, sidecar.Config{InstanceID: "front-1", Service: "front", Version: "v1", Dependencies: []string{"back"}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*within)
	defer cancel()

	ctx0, _ := c.Begin(ctx) // used back and may call it again: back is not free
	call, err := c.Route(ctx0, "back")
	if err != nil || call.Version != "v1" {
		t.Fatalf("call before the update: %+v, %v", call, err)
	}
	call.Finish()
	u, err := ts.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "back", ToVersion: "v2",
		Strategy: pb.Strategy_STRATEGY_BF, MaxBlock: durationpb.New(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	progress := func() *pb.Update {
		g, err := ts.Admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	// WAITING: every session, this client included, acked update mode.
	servertest.Eventually(t, within, "the update to wait for back to be free", func() bool {
		return progress().Phase == pb.Phase_PHASE_WAITING
	})

	type routed struct {
		call sidecar.Call
		err  error
	}
	route := func(ctx context.Context) <-chan routed {
		out := make(chan routed, 1)
		go func() {
			call, err := c.Route(ctx, "back")
			out <- routed{call, err}
		}()
		return out
	}
	ctx1, _ := c.Begin(ctx)
	held := route(ctx1)
	servertest.Eventually(t, within, "the call to be held", func() bool { return progress().Progress.GetHeldCalls() == 1 })
	ctx2, t2 := c.Begin(ctx)
	ctx2c, cancel2 := context.WithCancel(ctx2)
	abandoned := route(ctx2c)
	servertest.Eventually(t, within, "the second call to be held", func() bool { return progress().Progress.GetHeldCalls() == 2 })
	cancel2()
	if r := <-abandoned; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Route with its context canceled = %+v, want context.Canceled", r)
	}

	again := <-route(ctx0) // t0 used back: decided at once, to v1
	if again.err != nil || again.call.Version != "v1" {
		t.Fatalf("call of a transaction that used back: %+v, want v1", again)
	}
	select {
	case r := <-held:
		t.Fatalf("held call answered before back was free: %+v", r)
	default:
	}
	again.call.Finish()
	if err := c.End(ctx0); err != nil {
		t.Fatal(err)
	}
	r := <-held
	if r.err != nil || r.call.Version != "v2" {
		t.Fatalf("released call: %+v, want v2", r)
	}
	// The abandoned call was released too; its sub-transaction at back
	// is returned by the client.
	servertest.Eventually(t, within, "the abandoned call's RETURN", func() bool {
		x := txn(ts, t2.ID)
		return slices.Equal(running(x), subs("front", t2.Sub)) && slices.Equal(used(x), []string{"back@v2", "front@v1"})
	})
	r.call.Finish()
	for _, ctx := range []context.Context{ctx1, ctx2} {
		if err := c.End(ctx); err != nil {
			t.Fatal(err)
		}
	}
	servertest.Eventually(t, within, "the update to finish", func() bool { return progress().Phase == pb.Phase_PHASE_DONE })
	servertest.Eventually(t, within, "the end", func() bool { return ts.Txns("").Total == 0 })
	noRejections(t, c)
}
