package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coordinator/coordinator/sidecar"
)

// The seed scenario: Portal gets a token from Auth (T1), then asks Proc to
// process the request (T2); Proc checks the token with Auth (T3) and reads
// DB (T4). Auth v1 and v2 sign tokens with different keys, so a token of one
// version is rejected by the other: a transaction that runs on both versions
// of Auth fails with no fault anywhere.

// recorder is what the services themselves record: each request served,
// with its transaction id, service and version. The checker reads only this.
type recorder struct {
	mu   sync.Mutex
	seen map[string]map[string]map[string]bool // txn -> service -> versions
}

func newRecorder() *recorder { return &recorder{seen: map[string]map[string]map[string]bool{}} }

func (r *recorder) record(txn, service, version string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.seen[txn]
	if m == nil {
		m = map[string]map[string]bool{}
		r.seen[txn] = m
	}
	if m[service] == nil {
		m[service] = map[string]bool{}
	}
	m[service][version] = true
}

// violations counts transactions that ran on two versions of one service.
func (r *recorder) violations() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.seen {
		for _, vs := range m {
			if len(vs) > 1 {
				n++
				break
			}
		}
	}
	return n
}

func token(version, txn string) string {
	mac := hmac.New(sha256.New, []byte("auth-key-"+version))
	mac.Write([]byte(txn))
	return version + "." + hex.EncodeToString(mac.Sum(nil))[:16]
}

// service is one instance: an HTTP server with its sidecar client.
type service struct {
	name, version string
	client        *sidecar.Client
	http          *http.Client
	addr          string
}

// start runs an instance of name@version whose handler h records every
// request in rec.
func start(ctx context.Context, coordinator string, rec *recorder, name, version string, deps []string,
	h func(s *service, w http.ResponseWriter, r *http.Request)) (*service, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c, err := sidecar.New(sidecar.Config{
		Coordinators: []string{coordinator}, InstanceID: name + "-" + version, Service: name, Version: version,
		Address: lis.Addr().String(), Dependencies: deps,
	})
	if err != nil {
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	s := &service{name: name, version: version, client: c, addr: lis.Addr().String(),
		http: &http.Client{Transport: sidecar.Transport(c, &http.Transport{MaxIdleConnsPerHost: 64})}}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: sidecar.Middleware(c)(http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			if t, ok := sidecar.FromContext(r.Context()); ok {
				rec.record(t.ID, name, version)
			}
			h(s, w, r)
		}))}
	go func() { _ = srv.Serve(lis) }()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	return s, nil
}

func (s *service) get(r *http.Request, url string) (string, error) {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return string(body), nil
}

func work(max time.Duration) { time.Sleep(time.Duration(rand.Int64N(int64(max)))) }

func authHandler(version string) func(*service, http.ResponseWriter, *http.Request) {
	return func(_ *service, w http.ResponseWriter, r *http.Request) {
		t, _ := sidecar.FromContext(r.Context())
		switch r.URL.Path {
		case "/token":
			fmt.Fprint(w, token(version, t.ID))
		case "/validate":
			if r.URL.Query().Get("token") != token(version, t.ID) {
				http.Error(w, "auth "+version+": invalid token", http.StatusUnauthorized)
				return
			}
			fmt.Fprint(w, "ok")
		default:
			http.NotFound(w, r)
		}
	}
}

func dbHandler(_ *service, w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "row") }

// procHandler checks the token with Auth (T3), says it is done with Auth,
// then reads DB (T4).
func procHandler(s *service, w http.ResponseWriter, r *http.Request) {
	work(2 * time.Millisecond)
	if _, err := s.get(r, "http://"+authService+"/validate?token="+r.URL.Query().Get("token")); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	sidecar.Done(r.Context(), authService)
	if _, err := s.get(r, "http://db/query"); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	fmt.Fprint(w, "processed")
}

// portalHandler gets a token (T1), then has Proc process the request (T2).
func portalHandler(s *service, w http.ResponseWriter, r *http.Request) {
	tok, err := s.get(r, "http://"+authService+"/token")
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	sidecar.Done(r.Context(), authService) // Portal itself will not call Auth again
	work(3 * time.Millisecond)
	if _, err := s.get(r, "http://proc/process?token="+tok); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	fmt.Fprint(w, "ok")
}
