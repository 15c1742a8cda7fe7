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

	"github.com/coordinator/coordinator/security/tlsfiles"
	"github.com/coordinator/coordinator/sidecar"
)

// The seed scenario: Portal gets a token from Auth (T1), then asks Proc to
// process the request (T2); Proc checks the token with Auth (T3) and reads
// DB (T4). Auth v1 and v2 sign tokens with different keys, so a token of one
// version is rejected by the other: a transaction that runs on both versions
// of Auth fails with no fault anywhere.

// recorder is what the services themselves record: each request served,
// with its transaction id, service and version. The checker reads only this.
// A transaction is forgotten when its root, Portal, has answered (every call
// it made has returned by then), so memory follows the live transactions,
// however long the demo runs; a transaction is counted as a violation the
// moment it is seen on a second version of a service.
type recorder struct {
	mu     sync.Mutex
	seen   map[string]map[string]string // live txn -> service -> version
	broken map[string]bool              // live txns counted as violations
	nViol  int
	served map[string]int64 // version -> requests Auth served at it
	// inLane counts the requests served for a transaction in a lane
	// (--lane); a lane member served on another version than the lane's
	// map is a violation (the transaction left its lane).
	inLane int64
}

func newRecorder() *recorder {
	return &recorder{seen: map[string]map[string]string{}, broken: map[string]bool{}, served: map[string]int64{}}
}

func (r *recorder) record(txn, service, version string) { r.recordIn(txn, service, version, nil) }

// recordIn is record for a transaction that runs in a lane whose member
// map (service -> version) is lane; nil: none.
func (r *recorder) recordIn(txn, service, version string, lane map[string]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if lane != nil {
		r.inLane++
		if want, member := lane[service]; member && want != version && !r.broken[txn] {
			r.broken[txn] = true // it left its lane
			r.nViol++
		}
	}
	if service == authService {
		r.served[version]++
	}
	m := r.seen[txn]
	if m == nil {
		m = map[string]string{}
		r.seen[txn] = m
	}
	if v, ok := m[service]; !ok {
		m[service] = version
	} else if v != version && !r.broken[txn] {
		r.broken[txn] = true
		r.nViol++
	}
	if !r.broken[txn] && mixedSet(m) {
		// Portal and Proc on different versions: a mixed set (--set).
		r.broken[txn] = true
		r.nViol++
	}
}

// finish forgets a transaction that has ended.
func (r *recorder) finish(txn string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.seen, txn)
	delete(r.broken, txn)
}

// violations counts transactions that ran on two versions of one service,
// or Portal and Proc on different versions (a mixed set, --set).
func (r *recorder) violations() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nViol
}

// laneRequests counts the requests the services served in a lane (each
// service's, so several per transaction).
func (r *recorder) laneRequests() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inLane
}

// authServed returns how many requests Auth served at each version.
func (r *recorder) authServed() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int64, len(r.served))
	for v, n := range r.served {
		out[v] = n
	}
	return out
}

func token(version, txn string) string {
	mac := hmac.New(sha256.New, []byte("auth-key-"+version))
	mac.Write([]byte(txn))
	return version + "." + hex.EncodeToString(mac.Sum(nil))[:16]
}

// service is one instance: an HTTP server with its sidecar client.
type service struct {
	name, version, instance string
	client                  *sidecar.Client
	http                    *http.Client
	srv                     *http.Server
	addr                    string
}

// start runs an instance of name@version, registered as instance, whose
// handler h records every request in rec; a root service (Portal) also
// tells rec when each of its transactions has ended.
// coordinatorConn is how the demo's sidecars reach the coordinator.
type coordinatorConn struct {
	addr       string
	tls        tlsfiles.Files
	serverName string
}

func start(ctx context.Context, co coordinatorConn, rec *recorder, instance, name, version string, deps []string, root bool,
	h func(s *service, w http.ResponseWriter, r *http.Request)) (*service, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c, err := sidecar.New(sidecar.Config{
		Coordinators: []string{co.addr}, InstanceID: instance, Service: name, Version: version,
		Address: lis.Addr().String(), Dependencies: deps, EntryPoint: root,
		TLS: co.tls, TLSServerName: co.serverName,
	})
	if err != nil {
		lis.Close()
		return nil, err
	}
	if err := c.Start(ctx); err != nil {
		lis.Close()
		_ = c.Close(context.Background())
		return nil, err
	}
	s := &service{name: name, version: version, instance: instance, client: c, addr: lis.Addr().String(),
		http: &http.Client{Transport: sidecar.Transport(c, &http.Transport{MaxIdleConnsPerHost: 64})}}
	s.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: sidecar.Middleware(c)(http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			t, ok := sidecar.FromContext(r.Context())
			if ok {
				_, lane := t.Lane()
				rec.recordIn(t.ID, name, version, lane)
				if root {
					defer rec.finish(t.ID)
				}
			}
			h(s, w, r)
		}))}
	go func() { _ = s.srv.Serve(lis) }()
	return s, nil
}

// close deregisters the instance (its session ends at once rather than
// when its lease expires), then stops its HTTP server.
func (s *service) close(ctx context.Context) error {
	err := s.client.Close(ctx)
	if cerr := s.srv.Shutdown(ctx); err == nil {
		err = cerr
	}
	return err
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
	portalSends(s, w, r, "")
}

// portalSends is Portal, sending Proc the request fields extra besides the
// token.
func portalSends(s *service, w http.ResponseWriter, r *http.Request, extra string) {
	tok, err := s.get(r, "http://"+authService+"/token")
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	sidecar.Done(r.Context(), authService) // Portal itself will not call Auth again
	work(3 * time.Millisecond)
	if _, err := s.get(r, "http://proc/process?token="+tok+extra); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	fmt.Fprint(w, "ok")
}
