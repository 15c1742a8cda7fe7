// Command authdemo runs the seed scenario (Portal, Proc, Auth, DB) as real
// HTTP services on loopback using the sidecar SDK, puts them under load,
// updates Auth from v1 to v2 through the coordinator's admin API with the
// chosen strategy, and checks, from what the services themselves recorded,
// that no request ran on two versions of Auth. Its last line is:
//
//	strategy=S requests=N failed=F violations=V update_ms=U p99_ms=P
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/strategy"
)

// authService is the service name Auth registers under: the name the
// README's coordctl and curl examples use (Portal, Proc and DB register as
// portal, proc and db).
const authService = "auth-service"

func main() {
	var (
		strat       = flag.String("strategy", "cv", "naive, wf, bf or cv")
		coordinator = flag.String("coordinator", "", "gRPC address of a running coordinator (default: start one on an embedded etcd)")
		httpAddr    = flag.String("coordinator-http", "", "its REST address (needed with --coordinator)")
		workers     = flag.Int("concurrency", 16, "concurrent clients")
		duration    = flag.Duration("duration", 8*time.Second, "length of the load")
		updateAt    = flag.Duration("update-after", time.Second, "when to start the update")
		timeout     = flag.Duration("timeout", 0, "abort the update when it has not switched within this time (0: for wf until the load ends, none for bf and cv)")
	)
	flag.Parse()
	log.SetFlags(0)
	kind, err := strategy.Parse(*strat)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	grpcAddr, restAddr := *coordinator, *httpAddr
	if grpcAddr == "" {
		dir, err := os.MkdirTemp("", "authdemo-")
		check(err)
		defer os.RemoveAll(dir)
		srv, err := server.Start(ctx, server.Config{GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", DataDir: dir})
		check(err)
		_, err = srv.WaitLeading(ctx)
		check(err)
		defer srv.Close(context.Background())
		grpcAddr, restAddr = srv.GRPCAddr(), srv.HTTPAddr()
	} else if restAddr == "" {
		log.Fatal("--coordinator-http is needed with --coordinator")
	}

	rec := newRecorder()
	var portal *service
	for _, s := range []struct {
		name, version string
		deps          []string
		h             func(*service, http.ResponseWriter, *http.Request)
	}{
		{authService, "v1", nil, authHandler("v1")},
		{"db", "v1", nil, dbHandler},
		{"proc", "v1", []string{authService, "db"}, procHandler},
		{"portal", "v1", []string{authService, "proc"}, portalHandler},
		{authService, "v2", nil, authHandler("v2")}, // the new version, registered and ready
	} {
		svc, err := start(ctx, grpcAddr, rec, s.name, s.version, s.deps, s.h)
		check(err)
		if s.name == "portal" {
			portal = svc
		}
	}

	var (
		requests, failed atomic.Int64
		latMu            sync.Mutex
		lats             []time.Duration
		wg               sync.WaitGroup
		firstErr         atomic.Value
	)
	deadline := time.Now().Add(*duration)
	for range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{}
			for time.Now().Before(deadline) {
				start := time.Now()
				resp, err := client.Get("http://" + portal.addr + "/")
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
					}
				}
				requests.Add(1)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
				latMu.Lock()
				lats = append(lats, time.Since(start))
				latMu.Unlock()
				work(12 * time.Millisecond) // think time
			}
		}()
	}

	time.Sleep(*updateAt)
	wfTimeout := *timeout
	if wfTimeout == 0 && kind == strategy.WF {
		wfTimeout = *duration - *updateAt
	} // BF is bounded by its max-block (the coordinator's default), CV needs none
	updateStart := time.Now()
	id := startUpdate(restAddr, kind, wfTimeout)
	phase, reason := waitUpdate(restAddr, id, time.Now().Add(*duration+30*time.Second))
	updateMS := time.Since(updateStart).Milliseconds()
	log.Printf("update %s of %s to v2 (%s): %s %s after %d ms", id, authService, strategy.Name(kind), phase, reason, updateMS)
	wg.Wait()

	slices.Sort(lats)
	p99 := lats[len(lats)*99/100]
	if e := firstErr.Load(); e != nil {
		log.Printf("first failure: %s", e)
	}
	fmt.Printf("strategy=%s requests=%d failed=%d violations=%d update_ms=%d p99_ms=%.1f\n",
		strategy.Name(kind), requests.Load(), failed.Load(), rec.violations(), updateMS, float64(p99.Microseconds())/1000)
}

// startUpdate asks the coordinator's REST API to update Auth to v2.
func startUpdate(rest string, kind strategy.Kind, timeout time.Duration) string {
	req := map[string]any{"toVersion": "v2", "strategy": kind.String()}
	if timeout > 0 {
		req["timeout"] = fmt.Sprintf("%.3fs", timeout.Seconds())
	}
	body, _ := json.Marshal(req)
	resp, err := http.Post("http://"+rest+"/v1/services/"+authService+"/updates", "application/json", bytes.NewReader(body))
	check(err)
	defer resp.Body.Close()
	var u struct {
		ID      string `json:"id"`
		Message string `json:"message"`
	}
	check(json.NewDecoder(resp.Body).Decode(&u))
	if resp.StatusCode != http.StatusOK {
		log.Fatalf("start update: %s: %s", resp.Status, u.Message)
	}
	return u.ID
}

// waitUpdate polls the update until it finishes.
func waitUpdate(rest, id string, deadline time.Time) (phase, reason string) {
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + rest + "/v1/updates/" + id)
		check(err)
		var u struct {
			Phase      string `json:"phase"`
			Reason     string `json:"reason"`
			FinishedAt string `json:"finishedAt"`
			Progress   any    `json:"progress"`
		}
		check(json.NewDecoder(resp.Body).Decode(&u))
		resp.Body.Close()
		if u.FinishedAt != "" && u.Progress == nil {
			return strings.TrimPrefix(u.Phase, "PHASE_"), u.Reason
		}
		time.Sleep(5 * time.Millisecond)
	}
	log.Fatalf("update %s did not finish", id)
	return "", ""
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
