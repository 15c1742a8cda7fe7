package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/loadsim"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/adminauth"
	"github.com/coordinator/coordinator/security/testca"
	"github.com/coordinator/coordinator/security/tlsfiles"
	"github.com/coordinator/coordinator/sidecar"
)

// TLS everywhere on a three-process cluster: one CA issues each replica's
// certificate (one SPIFFE ID for all replicas, served on gRPC and HTTP,
// presented to the other etcd members and to its own member's client
// listener) and the workloads' client certificates.

const (
	tlsTrustDomain = "test.example"
	replicaSPIFFE  = "spiffe://" + tlsTrustDomain + "/ns/coordinator/sa/coordinator"
)

// workloadSPIFFE is the SPIFFE ID of service account sa in namespace shop.
func workloadSPIFFE(sa string) string { return "spiffe://" + tlsTrustDomain + "/ns/shop/sa/" + sa }

// tlsPKI is the CA, token and policy files of a TLS cluster.
type tlsPKI struct {
	dir              string
	ca               *testca.CA
	caFile           string
	tokenFile        string
	operator, viewer string // bearer tokens
	policyFile       string
	ctlBin           string

	mu     sync.Mutex
	admins map[[2]string]pb.AdminServiceClient // by address and token
}

func newTLSPKI(t *testing.T, ctlBin string) *tlsPKI {
	t.Helper()
	p := &tlsPKI{dir: t.TempDir(), ca: testca.New(t, "coordinator test CA"), ctlBin: ctlBin}
	p.caFile = filepath.Join(p.dir, "ca.crt")
	p.ca.WriteCA(t, p.caFile)
	var err error
	if p.operator, err = adminauth.NewToken(); err != nil {
		t.Fatal(err)
	}
	if p.viewer, err = adminauth.NewToken(); err != nil {
		t.Fatal(err)
	}
	p.tokenFile = filepath.Join(p.dir, "tokens.yaml")
	tokens := fmt.Sprintf("tokens:\n- {name: otto, role: operator, sha256: %s}\n- {name: vera, role: viewer, sha256: %s}\n",
		adminauth.HashToken(p.operator), adminauth.HashToken(p.viewer))
	// The default mapping (sa/SERVICE registers as SERVICE), and a gateway
	// account that registers as portal.
	p.policyFile = filepath.Join(p.dir, "identity-policy.yaml")
	policy := fmt.Sprintf("default: service-account\nidentities:\n- identity: %s\n  services: [portal]\n", workloadSPIFFE("gateway"))
	for path, body := range map[string]string{p.tokenFile: tokens, p.policyFile: policy} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// memberFlags are a member's TLS flags: its own replica certificate for
// the gRPC and HTTP listeners, for etcd peer TLS and (the default of the
// --etcd-client-* flags) its member's client listener and its etcd client;
// client certificates verified; admin tokens; the identity policy.
func (p *tlsPKI) memberFlags(t *testing.T) func(m *member) []string {
	return func(m *member) []string {
		f := p.ca.WriteFiles(t, p.dir, "replica-"+m.name, testca.Leaf{CommonName: m.name, URIs: []string{replicaSPIFFE},
			DNSNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
		return []string{"--tls-cert", f.Cert, "--tls-key", f.Key, "--client-ca", f.CA,
			"--peer-cert", f.Cert, "--peer-key", f.Key, "--peer-ca", f.CA,
			"--trust-domain", tlsTrustDomain, "--token-file", p.tokenFile, "--identity-policy", p.policyFile}
	}
}

// workload writes a client-only certificate of service account sa.
func (p *tlsPKI) workload(t *testing.T, name, sa string) tlsfiles.Files {
	t.Helper()
	f := p.ca.WriteFiles(t, p.dir, "workload-"+name, testca.Leaf{URIs: []string{workloadSPIFFE(sa)}, ClientOnly: true})
	return tlsfiles.Files{CA: f.CA, Cert: f.Cert, Key: f.Key}
}

// admin is an admin client of addr over TLS (no client certificate) with
// a bearer token ("": none), one connection for each.
func (p *tlsPKI) admin(t *testing.T, addr, token string) pb.AdminServiceClient {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	key := [2]string{addr, token}
	if a, ok := p.admins[key]; ok {
		return a
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(servertest.ClientTLS(t, tlsfiles.Files{CA: p.caFile})))}
	if token != "" {
		opts = append(opts, adminauth.WithToken(token))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if p.admins == nil {
		p.admins = map[[2]string]pb.AdminServiceClient{}
	}
	p.admins[key] = pb.NewAdminServiceClient(conn)
	return p.admins[key]
}

// ctl runs coordctl over TLS against servers with a token ("": none).
func (p *tlsPKI) ctl(token string, servers []string, args ...string) (string, error) {
	cmd := exec.Command(p.ctlBin, append([]string{"--server", strings.Join(servers, ","), "--tls-ca", p.caFile, "--timeout", "10s"}, args...)...)
	cmd.Env = append(os.Environ(), "COORDCTL_TOKEN="+token)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mustCtl is ctl that fails the test on an error.
func (p *tlsPKI) mustCtl(t *testing.T, token string, servers []string, args ...string) string {
	t.Helper()
	out, err := p.ctl(token, servers, args...)
	if err != nil {
		t.Fatalf("coordctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// tlsCluster is three coordinatord with TLS everywhere, serving.
type tlsCluster struct {
	pki     *tlsPKI
	members []*member
}

func startTLSCluster(t *testing.T) *tlsCluster {
	t.Helper()
	bin := buildBinary(t, "cmd/coordinatord")
	pki := newTLSPKI(t, buildBinary(t, "cmd/coordctl"))
	begin := time.Now()
	c := &tlsCluster{pki: pki, members: startThreeMembersWith(t, bin, "https", pki.memberFlags(t))}
	t.Logf("three members serving with TLS in %v", time.Since(begin).Round(time.Millisecond))
	return c
}

func (c *tlsCluster) addrs() []string {
	var a []string
	for _, m := range c.members {
		a = append(a, m.addr())
	}
	return a
}

// alive are the members whose process runs.
func (c *tlsCluster) alive() []*member {
	var a []*member
	for _, m := range c.members {
		select {
		case <-m.exited:
		default:
			a = append(a, m)
		}
	}
	return a
}

// view is the cluster view of the first live member that answers (viewer
// token), or nil.
func (c *tlsCluster) view(t *testing.T) *pb.Cluster {
	t.Helper()
	for _, m := range c.alive() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v, err := c.pki.admin(t, m.addr(), c.pki.viewer).GetCluster(ctx, &pb.GetClusterRequest{})
		cancel()
		if err == nil {
			return v
		}
	}
	return nil
}

// leader waits until a live member other than the one named not ("": any)
// leads, as the live members' cluster view says, and returns it.
func (c *tlsCluster) leader(t *testing.T, not string) *member {
	t.Helper()
	var leader *member
	servertest.Eventually(t, 30*time.Second, "a leader", func() bool {
		v := c.view(t)
		if v == nil || v.Leader == nil || v.Leader.Name == not {
			return false
		}
		for _, m := range c.alive() {
			if m.addr() == v.Leader.GrpcAddress {
				leader = m
				return true
			}
		}
		return false
	})
	return leader
}

func (c *tlsCluster) follower(leader *member) *member {
	for _, m := range c.alive() {
		if m != leader {
			return m
		}
	}
	return nil
}

// sidecarConfig is an SDK client's configuration over TLS with the
// certificate of service account sa.
func (c *tlsCluster) sidecarConfig(t *testing.T, inst, svc, ver, sa string, deps ...string) sidecar.Config {
	return sidecar.Config{Coordinators: c.addrs(), InstanceID: inst, Service: svc, Version: ver,
		Address: "127.0.0.1:1", Dependencies: deps, TLS: c.pki.workload(t, inst, sa)}
}

// auditLines are the audit lines of a member's log with result OK for method.
func auditLines(m *member, method string) []map[string]any {
	var lines []map[string]any
	for l := range strings.Lines(m.stderr()) {
		var line map[string]any
		if json.Unmarshal([]byte(l), &line) == nil && line["msg"] == "audit" && line["result"] == "OK" &&
			strings.HasSuffix(fmt.Sprint(line["method"]), "/"+method) {
			lines = append(lines, line)
		}
	}
	return lines
}

// loggedAt is the time of the first line with message msg in m's log
// after after.
func loggedAt(m *member, msg string, after time.Time) (time.Time, bool) {
	for l := range strings.Lines(m.stderr()) {
		var line struct {
			Time time.Time
			Msg  string
		}
		if json.Unmarshal([]byte(l), &line) == nil && line.Msg == msg && line.Time.After(after) {
			return line.Time, true
		}
	}
	return time.Time{}, false
}

// TestThreeCoordinatordWithTLSEverywhere: three coordinatord processes
// with TLS on every listener (gRPC, HTTP, etcd peer and client), client
// certificates verified, a token file and an identity policy. The etcd
// cluster forms over https; plaintext is refused; admin calls need a token
// and the operator role to mutate; a follower forwards an operator's call
// to the leader, which alone audits it; sidecars register with their
// workload certificates and route, and one whose identity may not register
// as the service it names is refused.
func TestThreeCoordinatordWithTLSEverywhere(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three coordinatord")
	}
	c := startTLSCluster(t)
	pki, addrs := c.pki, c.addrs()
	leader := c.leader(t, "")
	follower := c.follower(leader)

	// The cluster over https, through coordctl with TLS and a token: three
	// healthy members (their status read over TLS), one Raft leader, three
	// replicas, one leader.
	var view pb.Cluster
	servertest.Eventually(t, 30*time.Second, "three healthy etcd members, one Raft leader", func() bool {
		out, err := pki.ctl(pki.viewer, addrs, "cluster", "-o", "json")
		if err != nil || protojson.Unmarshal([]byte(out), &view) != nil {
			return false
		}
		raft := 0
		for _, em := range view.Members {
			if !em.Healthy {
				return false
			}
			if em.RaftLeader {
				raft++
			}
		}
		return len(view.Members) == 3 && raft == 1 && len(view.Replicas) == 3 && view.Leader.GetName() == leader.name
	})
	for _, em := range view.Members {
		urls := append(slices.Clone(em.PeerUrls), em.ClientUrls...)
		if len(em.PeerUrls) == 0 || len(em.ClientUrls) == 0 {
			t.Errorf("member %s publishes peer URLs %v, client URLs %v", em.Name, em.PeerUrls, em.ClientUrls)
		}
		for _, u := range urls {
			if !strings.HasPrefix(u, "https://") {
				t.Errorf("member %s publishes %s, want https", em.Name, u)
			}
		}
	}
	if out := pki.mustCtl(t, pki.viewer, addrs, "cluster"); !strings.Contains(out, leader.name) {
		t.Errorf("coordctl cluster does not name the leader %s:\n%s", leader.name, out)
	}

	httpsClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: servertest.ClientTLS(t, tlsfiles.Files{CA: pki.caFile})}}
	plainClient := &http.Client{Timeout: 5 * time.Second}
	// The view above is one member's: a follower learns who leads by
	// observing the election, which lapses for a moment while the cluster
	// forms (Raft leadership moves off the leading replica's member), and
	// says "no leader elected" meanwhile. Every member healthy first; then
	// what TLS must refuse and allow.
	for _, m := range c.members {
		m.mu.Lock()
		httpAddr := m.httpAddr
		m.mu.Unlock()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			resp, err := httpsClient.Get("https://" + httpAddr + "/health")
			last := fmt.Sprint(err)
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
				last = fmt.Sprintf("%d %s", resp.StatusCode, body)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not healthy over HTTPS within 30s: %s", m.name, last)
			}
		}
	}
	for _, m := range c.members {
		// Plaintext gRPC and HTTP are refused.
		conn, err := grpc.NewClient(m.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = pb.NewAdminServiceClient(conn).GetCluster(ctx, &pb.GetClusterRequest{})
		cancel()
		conn.Close()
		if err == nil {
			t.Errorf("%s: plaintext gRPC GetCluster succeeded", m.name)
		}
		m.mu.Lock()
		httpAddr := m.httpAddr
		m.mu.Unlock()
		if resp, err := plainClient.Get("http://" + httpAddr + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Errorf("%s: plaintext GET /health answers %d", m.name, resp.StatusCode)
			}
		}
		// /health over HTTPS answers without a client certificate.
		resp, err := httpsClient.Get("https://" + httpAddr + "/health")
		if err != nil {
			t.Fatalf("%s: GET /health over HTTPS: %v", m.name, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: GET /health over HTTPS = %d %s", m.name, resp.StatusCode, body)
		}
		// An admin call with neither a certificate nor a token: Unauthenticated.
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		_, err = pki.admin(t, m.addr(), "").ListServices(ctx, &pb.ListServicesRequest{})
		cancel()
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: ListServices without credentials = %v, want Unauthenticated", m.name, err)
		}
	}
	if out, err := pki.ctl("", addrs, "services"); err == nil || !strings.Contains(out, "no client certificate or bearer token") {
		t.Errorf("coordctl services without a token: %v\n%s", err, out)
	}

	// Sidecars with workload certificates: auth@v1 and auth@v2 as sa/auth,
	// portal as sa/gateway (the policy's rule).
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := func(cfg sidecar.Config) *sidecar.Client {
		t.Helper()
		cl, err := sidecar.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close(context.Background()) })
		if err := cl.Start(ctx); err != nil {
			t.Fatalf("%s: Start: %v", cfg.InstanceID, err)
		}
		return cl
	}
	start(c.sidecarConfig(t, "auth-1", "auth", "v1", "auth"))
	start(c.sidecarConfig(t, "auth-2", "auth", "v2", "auth"))
	portal := start(c.sidecarConfig(t, "portal-1", "portal", "v1", "gateway", "auth"))
	route := func(want string) {
		t.Helper()
		tctx, _ := portal.Begin(ctx)
		call, err := portal.Route(tctx, "auth")
		if err != nil {
			t.Fatalf("portal -> auth: %v", err)
		}
		call.Finish()
		if err := portal.End(tctx); err != nil {
			t.Fatal(err)
		}
		if call.Version != want {
			t.Fatalf("portal -> auth@%s, want %s", call.Version, want)
		}
	}
	route("v1")
	sessions, err := pki.admin(t, follower.addr(), pki.viewer).ListSessions(ctx, &pb.ListSessionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, s := range sessions.Sessions {
		ids[s.InstanceId] = s.Identity
	}
	if want := map[string]string{"auth-1": workloadSPIFFE("auth"), "auth-2": workloadSPIFFE("auth"), "portal-1": workloadSPIFFE("gateway")}; !maps.Equal(ids, want) {
		t.Errorf("sessions' identities %v, want %v", ids, want)
	}
	// sa/auth may not register as billing.
	imp, err := sidecar.New(c.sidecarConfig(t, "billing-1", "billing", "v1", "auth"))
	if err != nil {
		t.Fatal(err)
	}
	defer imp.Close(context.Background())
	sctx, scancel := context.WithTimeout(ctx, 15*time.Second)
	err = imp.Start(sctx)
	scancel()
	if !errors.Is(err, sidecar.ErrRegister) || status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), workloadSPIFFE("auth")) {
		t.Fatalf("billing-1 as sa/auth: Start = %v, want a refused registration (PermissionDenied)", err)
	}

	// The viewer reads, but may not start an update.
	if out := pki.mustCtl(t, pki.viewer, addrs, "services"); !strings.Contains(out, "auth") {
		t.Errorf("coordctl services as viewer:\n%s", out)
	}
	if out, err := pki.ctl(pki.viewer, addrs, "update", "auth", "--to", "v2", "--strategy", "cv"); err == nil || !strings.Contains(out, "needs the operator role") {
		t.Errorf("coordctl update as viewer: %v\n%s", err, out)
	}
	_, err = pki.admin(t, leader.addr(), pki.viewer).StartUpdate(ctx, &pb.StartUpdateRequest{Service: "auth", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("StartUpdate as viewer = %v, want PermissionDenied", err)
	}

	// The operator's update through the follower alone: it forwards it to
	// the leader, which executes and audits it.
	out := pki.mustCtl(t, pki.operator, []string{follower.addr()}, "update", "auth", "--to", "v2", "--strategy", "cv", "-o", "json")
	var u pb.Update
	if err := protojson.Unmarshal([]byte(out), &u); err != nil || u.Id == "" {
		t.Fatalf("coordctl update -o json: %v\n%s", err, out)
	}
	admin := pki.admin(t, follower.addr(), pki.operator)
	servertest.Eventually(t, 30*time.Second, "the update to finish", func() bool {
		g, err := admin.GetUpdate(ctx, &pb.GetUpdateRequest{Id: u.Id})
		return err == nil && g.FinishedAt != nil && g.Phase == pb.Phase_PHASE_DONE
	})
	route("v2")
	servertest.Eventually(t, 10*time.Second, "the leader's audit line of StartUpdate", func() bool {
		return len(auditLines(leader, "StartUpdate")) == 1
	})
	line := auditLines(leader, "StartUpdate")[0]
	if line["who"] != "otto" || line["role"] != "operator" || line["forwarded_by"] != replicaSPIFFE {
		t.Errorf("leader's audit line: %v, want otto, operator, forwarded by %s", line, replicaSPIFFE)
	}
	for _, m := range c.members {
		if m != leader && len(auditLines(m, "StartUpdate")) != 0 {
			t.Errorf("%s (not the leader) audited StartUpdate: %v", m.name, auditLines(m, "StartUpdate"))
		}
	}
}

// TestFailoverWithTLSEverywhere: under a load of transactions through SDK
// clients with workload certificates, a CV update started with coordctl
// (operator token, TLS), and the leader's process killed with SIGKILL (its
// etcd member with it) while the update drains: a new leader is elected,
// every sidecar comes back to it over TLS with its identity and instance
// id, the update completes, and no transaction ran on two versions of d.
func TestFailoverWithTLSEverywhere(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs three coordinatord")
	}
	c := startTLSCluster(t)
	pki := c.pki
	leader := c.leader(t, "")

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// Each instance presents the certificate of its service's account.
	sim, err := loadsim.Start(ctx, loadsim.Config{Coordinators: c.addrs(), Graph: failoverGraph,
		Instances: failoverInstances, Entry: "a", HeartbeatInterval: 500 * time.Millisecond, AllowedMisses: 2,
		Configure: func(inst string, cfg *sidecar.Config) {
			cfg.TLS = pki.workload(t, strings.NewReplacer("@", "-", "#", "-").Replace(inst), cfg.Service)
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	stop := sim.Load(ctx, 50, 20)
	defer stop()

	// A transaction that used d@v1 and calls d again after the failover
	// keeps v1 from draining (as in TestFailoverInEveryPhase).
	blocker := sim.Client("c@v1")
	btx, _ := blocker.Begin(ctx)
	call, err := blocker.Route(btx, "d")
	if err != nil {
		t.Fatal(err)
	}
	if call.Version != "v1" {
		t.Fatalf("blocker routed to d@%s before the update", call.Version)
	}
	call.Finish()

	out := pki.mustCtl(t, pki.operator, c.addrs(), "update", "d", "--to", "v2", "--strategy", "cv", "-o", "json")
	var u pb.Update
	if err := protojson.Unmarshal([]byte(out), &u); err != nil || u.Id == "" {
		t.Fatalf("coordctl update -o json: %v\n%s", err, out)
	}
	// getUpdate asks the live members in turn (none may lead for a while).
	getUpdate := func() *pb.Update {
		for _, m := range c.alive() {
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			g, err := pki.admin(t, m.addr(), pki.viewer).GetUpdate(cctx, &pb.GetUpdateRequest{Id: u.Id})
			ccancel()
			if err == nil {
				return g
			}
		}
		return nil
	}
	servertest.Eventually(t, 20*time.Second, "the update to drain", func() bool {
		g := getUpdate()
		return g != nil && g.Phase == pb.Phase_PHASE_DRAINING
	})
	time.Sleep(200 * time.Millisecond) // load runs while it drains

	raft := "unknown"
	for _, em := range c.view(t).GetMembers() {
		if em.RaftLeader {
			raft = em.Name
		}
	}
	killed := time.Now()
	leader.kill() // SIGKILL: the replica and its etcd member, no resignation
	next := c.leader(t, leader.name)
	// The view answers slower than the election: GetCluster waits for the
	// dead member's status (a 2 s bound); the new leader's log says when.
	took := "?"
	if at, ok := loggedAt(next, "leading", killed); ok {
		took = at.Sub(killed).Round(time.Millisecond).String()
	}
	t.Logf("%s killed (etcd Raft leader: %s); %s leads %s after the kill, seen %v after", leader.name, raft, next.name,
		took, time.Since(killed).Round(time.Millisecond))

	// Every sidecar back on the new leader, over TLS with its certificate:
	// same instance ids, same identities.
	admin := pki.admin(t, next.addr(), pki.viewer)
	want := map[string]string{}
	for _, inst := range failoverInstances {
		svc, _, _ := strings.Cut(inst, "@")
		want[inst] = workloadSPIFFE(svc)
	}
	servertest.Eventually(t, 30*time.Second, "every session back on the new leader", func() bool {
		l, err := admin.ListSessions(ctx, &pb.ListSessionsRequest{})
		if err != nil {
			return false
		}
		got := map[string]string{}
		for _, s := range l.Sessions {
			if s.Connected {
				got[s.InstanceId] = s.Identity
			}
		}
		return maps.Equal(got, want)
	})
	t.Logf("sessions back after %v", time.Since(killed).Round(time.Millisecond))

	// The blocker calls d again: it must get v1; then it ends and v1 drains.
	again, err := blocker.Route(btx, "d")
	if err != nil {
		t.Fatalf("blocker's second call: %v", err)
	}
	again.Finish()
	if again.Version != "v1" {
		t.Errorf("blocker used d@v1, then was routed to d@%s", again.Version)
	}
	if err := blocker.End(btx); err != nil {
		t.Errorf("blocker end: %v", err)
	}
	awaitDoneConsistent(t, 30*time.Second, getUpdate, stop, sim)
	if sim.Requests() == 0 {
		t.Error("no requests ran")
	}
	t.Logf("%d requests, update done %v after the kill", sim.Requests(), time.Since(killed).Round(time.Millisecond))
}
