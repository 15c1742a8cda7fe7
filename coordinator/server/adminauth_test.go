package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/adminauth"
)

// tokenFile writes a token file of name -> role to path and returns the
// tokens by name.
func tokenFile(t *testing.T, path string, roles map[string]string) map[string]string {
	t.Helper()
	toks := map[string]string{}
	var b bytes.Buffer
	b.WriteString("tokens:\n")
	for _, n := range slices.Sorted(func(yield func(string) bool) {
		for n := range roles {
			if !yield(n) {
				return
			}
		}
	}) {
		tok, err := adminauth.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		toks[n] = tok
		b.WriteString("- name: " + n + "\n  role: " + roles[n] + "\n  sha256: " + adminauth.HashToken(tok) + "\n")
	}
	if err := os.WriteFile(path+".tmp", b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
	return toks
}

// logSink collects a replica's JSON logs.
type logSink struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// audits returns the audit records of method at level.
func (l *logSink) audits(method, level string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "audit" && m["level"] == level &&
			strings.HasSuffix(m["method"].(string), "/"+method) {
			out = append(out, m)
		}
	}
	return out
}

// withAuth configures the token file, and a JSON log into a new sink
// (appended to sinks in start order).
func withAuth(path string, sinks *[]*logSink) servertest.Option {
	return func(cfg *server.Config) {
		cfg.AdminAuth.TokenFile = path
		cfg.AdminAuth.CheckInterval = time.Millisecond
		l := &logSink{}
		*sinks = append(*sinks, l)
		cfg.Logger = slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

type restClient struct {
	t    *testing.T
	base string
}

// do sends method path with headers and a JSON body; it returns the
// status, the response and its body decoded as a JSON object.
func (c restClient) do(method, path string, hdr map[string]string, body string) (*http.Response, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp, m
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

func TestAdminRolesOverGRPCAndREST(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	toks := tokenFile(t, path, map[string]string{"vera": "viewer", "otto": "operator"})
	var sinks []*logSink
	ts := servertest.Start(t, "", withAuth(path, &sinks))
	logs := sinks[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// gRPC.
	conn := func(tok string) *grpc.ClientConn {
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		if tok != "" {
			opts = append(opts, adminauth.WithToken(tok))
		}
		c, err := grpc.NewClient(ts.GRPCAddr(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	viewer, operator, anon := pb.NewAdminServiceClient(conn(toks["vera"])), pb.NewAdminServiceClient(conn(toks["otto"])), conn("")
	if _, err := viewer.GetGraph(ctx, &pb.GetGraphRequest{}); err != nil {
		t.Errorf("viewer GetGraph: %v", err)
	}
	if _, err := viewer.GetCluster(ctx, &pb.GetClusterRequest{}); err != nil {
		t.Errorf("viewer GetCluster: %v", err)
	}
	_, err := viewer.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "a", ToVersion: "v2"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "StartUpdate needs the operator role; vera (via token) has the viewer role") {
		t.Errorf("viewer StartUpdate: %v", err)
	}
	_, err = operator.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "a", ToVersion: "v2"})
	if c := status.Code(err); c == codes.PermissionDenied || c == codes.Unauthenticated {
		t.Errorf("operator StartUpdate refused: %v", err)
	}
	operatorCode := status.Code(err).String()
	_, err = pb.NewAdminServiceClient(anon).GetGraph(ctx, &pb.GetGraphRequest{})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "set --token or COORDCTL_TOKEN") {
		t.Errorf("no credential: %v", err)
	}
	if r, err := healthpb.NewHealthClient(anon).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health without a credential: %v %v", r, err)
	}
	st, err := reflectionpb.NewServerReflectionClient(anon).ServerReflectionInfo(ctx)
	if err == nil {
		_ = st.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
		_, err = st.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("reflection without a credential: %v", err)
	}

	// REST: the same rules.
	rc := restClient{t: t, base: "http://" + ts.HTTPAddr()}
	resp, body := rc.do("GET", "/v1/graph", nil, "")
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") || body["code"] != float64(16) {
		t.Errorf("REST without a credential: %d %v %v", resp.StatusCode, resp.Header, body)
	}
	for _, p := range []string{"/health", "/metrics"} {
		if resp, _ := rc.do("GET", p, nil, ""); resp.StatusCode != 200 {
			t.Errorf("%s without a credential: %d", p, resp.StatusCode)
		}
	}
	if resp, _ := rc.do("GET", "/openapi.json", nil, ""); resp.StatusCode != 401 {
		t.Errorf("/openapi.json without a credential: %d", resp.StatusCode)
	}
	if resp, _ := rc.do("GET", "/v1/graph", bearer(toks["vera"]), ""); resp.StatusCode != 200 {
		t.Errorf("viewer GET /v1/graph: %d", resp.StatusCode)
	}
	const start = `{"toVersion": "v2", "strategy": "cv"}`
	resp, body = rc.do("POST", "/v1/services/a/updates", bearer(toks["vera"]), start)
	if msg, _ := body["message"].(string); resp.StatusCode != 403 || body["code"] != float64(7) || !strings.Contains(msg, "needs the operator role") {
		t.Errorf("viewer POST update: %d %v", resp.StatusCode, body)
	}
	resp, body = rc.do("POST", "/v1/services/a/updates", bearer(toks["otto"]), start)
	if resp.StatusCode == 401 || resp.StatusCode == 403 {
		t.Errorf("operator POST update: %d %v", resp.StatusCode, body)
	}

	// A browser session: a cookie for a token, then the cookie alone.
	resp, body = rc.do("POST", adminauth.SessionPath, bearer(toks["vera"]), "")
	if resp.StatusCode != 200 || body["role"] != "viewer" || len(resp.Cookies()) != 1 {
		t.Fatalf("login: %d %v %v", resp.StatusCode, body, resp.Cookies())
	}
	ck := resp.Cookies()[0]
	if ck.Name != adminauth.SessionCookie || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.MaxAge != 12*3600 {
		t.Errorf("cookie %+v", ck)
	}
	cookie := map[string]string{"Cookie": ck.String()}
	if resp, _ := rc.do("GET", "/v1/updates", cookie, ""); resp.StatusCode != 200 {
		t.Errorf("GET with the cookie: %d", resp.StatusCode)
	}
	if resp, body := rc.do("POST", "/v1/selfpreservation:end", cookie, "{}"); resp.StatusCode != 403 || !strings.Contains(body["message"].(string), "vera (via cookie) has the viewer role") {
		t.Errorf("viewer cookie POST: %d %v", resp.StatusCode, body)
	}
	if resp, body := rc.do("GET", adminauth.SessionPath, cookie, ""); resp.StatusCode != 200 || body["name"] != "vera" {
		t.Errorf("whoami: %d %v", resp.StatusCode, body)
	}

	// The file changes: vera's token leaves, so does her session; a new
	// token works at once.
	toks2 := tokenFile(t, path, map[string]string{"otto": "operator", "nina": "viewer"})
	time.Sleep(10 * time.Millisecond)
	if resp, body := rc.do("GET", "/v1/updates", cookie, ""); resp.StatusCode != 401 || !strings.Contains(body["message"].(string), "no longer in the token file") {
		t.Errorf("revoked session: %d %v", resp.StatusCode, body)
	}
	if resp, _ := rc.do("GET", "/v1/updates", bearer(toks2["nina"]), ""); resp.StatusCode != 200 {
		t.Errorf("new token: %d", resp.StatusCode)
	}
	if _, err := viewer.GetGraph(ctx, &pb.GetGraphRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("removed token over gRPC: %v", err)
	}

	// One audit line per mutating call: the refused and the executed
	// StartUpdate on each of gRPC and REST, and the refused end of
	// self-preservation.
	got := logs.audits("StartUpdate", "INFO")
	if len(got) != 4 {
		t.Fatalf("StartUpdate audit lines: %v", got)
	}
	want := []struct{ who, result string }{{"vera", "PermissionDenied"}, {"otto", operatorCode}, {"vera", "PermissionDenied"}, {"otto", ""}}
	for i, w := range want {
		res := got[i]["result"]
		if got[i]["who"] != w.who || got[i]["via"] != "token" || (w.result != "" && res != w.result) ||
			(w.result == "" && (res == "PermissionDenied" || res == "Unauthenticated")) {
			t.Errorf("audit %d: %v, want %v", i, got[i], w)
		}
	}
	if got := logs.audits("EndSelfPreservation", "INFO"); len(got) != 1 || got[0]["via"] != "cookie" || got[0]["result"] != "PermissionDenied" {
		t.Errorf("EndSelfPreservation audit lines: %v", got)
	}
	if n := ts.Metric("coordinator_admin_auth_refusals_total"); n < 6 {
		t.Errorf("refusals counted: %v", n)
	}
	// REST calls go through the gateway's own server, and are counted in
	// the per-RPC metrics as before.
	if n := ts.Metric(`grpc_server_handled_total{grpc_code="PermissionDenied",grpc_method="StartUpdate",grpc_service="coordinator.v1.AdminService",grpc_type="unary"}`); n != 2 {
		t.Errorf("refused StartUpdate calls in grpc_server_handled_total: %v, want 2 (gRPC and REST)", n)
	}
}

// A follower checks the caller's role, forwards the call with the
// caller's credential, and the leader, which executes it, sees the caller
// and writes the one audit line at info (the follower's is at debug).
func TestFollowerForwardsTheCaller(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	toks := tokenFile(t, path, map[string]string{"vera": "viewer", "otto": "operator"})
	var sinks []*logSink
	cl := servertest.StartCluster(t, 2, withAuth(path, &sinks))
	leader := cl.Leader(within)
	f := cl.Follower(leader)
	li, fi := slices.Index(cl.Replicas, leader), slices.Index(cl.Replicas, f)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	conn, err := grpc.NewClient(f.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()), adminauth.WithToken(toks["otto"]))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = pb.NewAdminServiceClient(conn).AbortUpdate(ctx, &pb.AbortUpdateRequest{Id: "no-such-update"})
	if c := status.Code(err); c == codes.PermissionDenied || c == codes.Unauthenticated || c == codes.Unavailable {
		t.Fatalf("operator AbortUpdate on a follower: %v", err)
	}
	if got := sinks[li].audits("AbortUpdate", "INFO"); len(got) != 1 || got[0]["who"] != "otto" || got[0]["via"] != "token" || got[0]["result"] != status.Code(err).String() {
		t.Errorf("leader's audit: %v", got)
	}
	if got := sinks[fi].audits("AbortUpdate", "INFO"); len(got) != 0 {
		t.Errorf("the follower audited at info too: %v", got)
	}
	if got := sinks[fi].audits("AbortUpdate", "DEBUG"); len(got) != 1 {
		t.Errorf("follower's debug line: %v", got)
	}

	// Over REST with a cookie bought on the follower.
	rc := restClient{t: t, base: "http://" + f.HTTPAddr()}
	resp, _ := rc.do("POST", adminauth.SessionPath, bearer(toks["otto"]), "")
	if resp.StatusCode != 200 {
		t.Fatalf("login on the follower: %d", resp.StatusCode)
	}
	cookie := map[string]string{"Cookie": resp.Cookies()[0].String()}
	if resp, body := rc.do("GET", "/v1/updates", cookie, ""); resp.StatusCode != 200 {
		t.Errorf("follower REST read with a cookie: %d %v", resp.StatusCode, body)
	}
	resp, body := rc.do("POST", "/v1/updates/no-such-update:abort", cookie, "{}")
	if resp.StatusCode == 401 || resp.StatusCode == 403 || resp.StatusCode == 503 {
		t.Errorf("follower REST abort with a cookie: %d %v", resp.StatusCode, body)
	}
	if got := sinks[li].audits("AbortUpdate", "INFO"); len(got) != 2 || got[1]["who"] != "otto" {
		t.Errorf("leader's audit of the REST call: %v", got)
	}

	// A viewer is refused by the follower itself.
	vconn, err := grpc.NewClient(f.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()), adminauth.WithToken(toks["vera"]))
	if err != nil {
		t.Fatal(err)
	}
	defer vconn.Close()
	if _, err := pb.NewAdminServiceClient(vconn).AbortUpdate(ctx, &pb.AbortUpdateRequest{Id: "x"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("viewer AbortUpdate on a follower: %v", err)
	}
	if got := sinks[li].audits("AbortUpdate", "INFO"); len(got) != 2 {
		t.Errorf("a call refused by the follower reached the leader: %v", got)
	}
	if got := sinks[fi].audits("AbortUpdate", "INFO"); len(got) != 1 || got[0]["result"] != "PermissionDenied" {
		t.Errorf("follower's audit of the refusal: %v", got)
	}
}
