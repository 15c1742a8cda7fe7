package adminauth

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/testca"
	"github.com/coordinator/coordinator/security/tlsfiles"
)

// Every AdminService method, from the proto descriptor and from the
// generated grpc.ServiceDesc, is in MethodRoles, and MethodRoles names no
// method the service lacks. An unknown method needs Operator.
func TestEveryMethodClassified(t *testing.T) {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(pb.AdminService_ServiceDesc.ServiceName))
	if err != nil {
		t.Fatal(err)
	}
	sd := d.(protoreflect.ServiceDescriptor)
	var names []string
	for i := range sd.Methods().Len() {
		names = append(names, string(sd.Methods().Get(i).Name()))
	}
	var fromDesc []string
	for _, m := range pb.AdminService_ServiceDesc.Methods {
		fromDesc = append(fromDesc, m.MethodName)
	}
	for _, s := range pb.AdminService_ServiceDesc.Streams {
		fromDesc = append(fromDesc, s.StreamName)
	}
	slices.Sort(names)
	slices.Sort(fromDesc)
	if !slices.Equal(names, fromDesc) {
		t.Fatalf("descriptor %v, ServiceDesc %v", names, fromDesc)
	}
	for _, n := range names {
		if _, ok := MethodRoles[n]; !ok {
			t.Errorf("AdminService.%s is not in MethodRoles: classify it (viewer if it changes nothing, else operator)", n)
		}
	}
	for n := range MethodRoles {
		if !slices.Contains(names, n) {
			t.Errorf("MethodRoles lists %s, which AdminService does not have", n)
		}
	}
	for n, want := range map[string]Role{"StartUpdate": Operator, "AbortUpdate": Operator, "EndSelfPreservation": Operator,
		"GetGraph": Viewer, "WatchUpdate": Viewer, "DryRunUpdate": Viewer, "GetCluster": Viewer} {
		if got := RequiredRole(AdminPrefix + n); got != want {
			t.Errorf("%s needs %v, want %v", n, got, want)
		}
	}
	if got := RequiredRole(AdminPrefix + "PromoteUpdate"); got != Operator {
		t.Errorf("an unclassified method needs %v, want operator (fail closed)", got)
	}
	if IsAdmin("/grpc.health.v1.Health/Check") || IsAdmin("/coordinator.v1.SidecarService/Connect") {
		t.Error("health or the sidecar service taken for admin")
	}
}

// tokens writes a token file of name -> role with fresh tokens and
// returns the tokens by name.
func writeTokens(t *testing.T, path string, roles map[string]string) map[string]string {
	t.Helper()
	toks := map[string]string{}
	var f TokenFile
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range roles {
			if !yield(n) {
				return
			}
		}
	})
	for _, n := range names {
		tok, err := NewToken()
		if err != nil {
			t.Fatal(err)
		}
		toks[n] = tok
		f.Tokens = append(f.Tokens, TokenEntry{Name: n, Role: roles[n], SHA256: HashToken(tok)})
	}
	writeTokenFile(t, path, f)
	return toks
}

func writeTokenFile(t *testing.T, path string, f TokenFile) {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("tokens:\n")
	for _, e := range f.Tokens {
		b.WriteString("- name: " + e.Name + "\n  role: " + e.Role + "\n  sha256: " + e.SHA256 + "\n")
	}
	if err := os.WriteFile(path+".tmp", b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

func TestTokenFileErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ body, want string }{
		{"tokens: [{name: a, role: admin, sha256: " + HashToken("x") + "}]", `role "admin": want viewer or operator`},
		{"tokens: [{name: a, role: viewer, sha256: abc}]", "want 64 hex digits"},
		{"tokens: [{role: viewer, sha256: " + HashToken("x") + "}]", "tokens[0]: no name"},
		{"tokens: [{name: a, role: viewer, sha256: " + HashToken("x") + "}, {name: a, role: viewer, sha256: " + HashToken("y") + "}]", "name used twice"},
		{"tokens: [{name: a, role: viewer, token: x}]", "not YAML of the form"},
	} {
		p := filepath.Join(dir, "tokens.yaml")
		if err := os.WriteFile(p, []byte(c.body), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := New(Config{TokenFile: p})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v, want one naming the file and saying %q", c.body, err, c.want)
		}
	}
	if _, err := New(Config{TokenFile: filepath.Join(dir, "missing.yaml")}); err == nil || !strings.Contains(err.Error(), "token file") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := New(Config{IdentityRolesFile: filepath.Join(dir, "ids.yaml")}); err == nil || !strings.Contains(err.Error(), "client CA") {
		t.Errorf("identities without client certificates: %v", err)
	}
}

func TestIdentityRoles(t *testing.T) {
	ir, err := parseIdentities([]byte(`identities:
- {identity: spiffe://prod/ns/ops/sa/oncall, role: operator}
- {identity: "spiffe://prod/ns/ops/*", role: viewer}
- {identity: "spiffe://prod/*", role: viewer}
- {identity: "spiffe://prod/ns/ops/sa/admin*", role: operator}
`))
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]Role{
		"spiffe://prod/ns/ops/sa/oncall":  Operator,
		"spiffe://prod/ns/ops/sa/other":   Viewer,
		"spiffe://prod/ns/ops/sa/admin-2": Operator,
		"spiffe://prod/x":                 Viewer,
		"spiffe://staging/ns/ops/sa/x":    NoRole,
	} {
		if got := ir.role(id); got != want {
			t.Errorf("%s: %v, want %v", id, got, want)
		}
	}
	if _, err := parseIdentities([]byte(`identities: [{identity: "*", role: viewer}]`)); err == nil {
		t.Error("a bare * accepted")
	}
}

// logBuffer is a slog handler target safe for concurrent writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// records returns the JSON log records with msg.
func (l *logBuffer) records(msg string) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(l.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fakeAdmin records the principal each call carried.
type fakeAdmin struct {
	pb.UnimplementedAdminServiceServer
	mu   sync.Mutex
	seen []Principal
}

func (f *fakeAdmin) note(ctx context.Context) {
	p, _ := FromContext(ctx)
	f.mu.Lock()
	f.seen = append(f.seen, p)
	f.mu.Unlock()
}

func (f *fakeAdmin) last() Principal {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) == 0 {
		return Principal{}
	}
	return f.seen[len(f.seen)-1]
}

func (f *fakeAdmin) GetGraph(ctx context.Context, _ *pb.GetGraphRequest) (*pb.Graph, error) {
	f.note(ctx)
	return &pb.Graph{}, nil
}

func (f *fakeAdmin) StartUpdate(ctx context.Context, r *pb.StartUpdateRequest) (*pb.Update, error) {
	f.note(ctx)
	if r.Service == "missing" {
		return nil, status.Error(codes.NotFound, "service missing is not registered")
	}
	return &pb.Update{Id: "u1", Service: r.Service}, nil
}

func (f *fakeAdmin) WatchUpdate(_ *pb.WatchUpdateRequest, srv pb.AdminService_WatchUpdateServer) error {
	f.note(srv.Context())
	return srv.Send(&pb.Update{Id: "u1"})
}

// serve runs a gRPC server with a's interceptors on 127.0.0.1:0.
func serve(t *testing.T, a *Authenticator, opts ...grpc.ServerOption) (string, *fakeAdmin) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(append(opts, a.ServerOptions(Public)...)...)
	f := &fakeAdmin{}
	pb.RegisterAdminServiceServer(s, f)
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String(), f
}

func dial(t *testing.T, addr string, opts ...grpc.DialOption) pb.AdminServiceClient {
	t.Helper()
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewAdminServiceClient(conn)
}

func withBearer(tok string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
}

func TestTokenRolesOverGRPC(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	toks := writeTokens(t, path, map[string]string{"vera": "viewer", "otto": "operator"})
	var logs logBuffer
	a, err := New(Config{TokenFile: path, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	if a.Open() {
		t.Fatal("open with a token file")
	}
	addr, f := serve(t, a)
	c := dial(t, addr)

	if _, err := c.GetGraph(withBearer(toks["vera"]), &pb.GetGraphRequest{}); err != nil {
		t.Fatalf("viewer GetGraph: %v", err)
	}
	if p := f.last(); p != (Principal{Name: "vera", Role: Viewer, Via: ViaToken}) {
		t.Errorf("handler saw %+v", p)
	}
	_, err = c.StartUpdate(withBearer(toks["vera"]), &pb.StartUpdateRequest{Service: "a"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "StartUpdate needs the operator role; vera (via token) has the viewer role") {
		t.Errorf("viewer StartUpdate: %v", err)
	}
	if _, err := c.StartUpdate(withBearer(toks["otto"]), &pb.StartUpdateRequest{Service: "a"}); err != nil {
		t.Errorf("operator StartUpdate: %v", err)
	}
	if _, err := c.StartUpdate(withBearer(toks["otto"]), &pb.StartUpdateRequest{Service: "missing"}); status.Code(err) != codes.NotFound {
		t.Errorf("operator StartUpdate of a missing service: %v", err)
	}
	_, err = c.GetGraph(context.Background(), &pb.GetGraphRequest{})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "no client certificate or bearer token; set --token or COORDCTL_TOKEN") {
		t.Errorf("no credential: %v", err)
	}
	if _, err := c.GetGraph(withBearer("not-a-token"), &pb.GetGraphRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("bad token: %v", err)
	}
	// Streams too.
	st, err := c.WatchUpdate(withBearer(toks["vera"]), &pb.WatchUpdateRequest{Id: "u1"})
	if err == nil {
		_, err = st.Recv()
	}
	if err != nil {
		t.Errorf("viewer WatchUpdate: %v", err)
	}
	st, err = c.WatchUpdate(context.Background(), &pb.WatchUpdateRequest{Id: "u1"})
	if err == nil {
		_, err = st.Recv()
	}
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("WatchUpdate without credential: %v", err)
	}
	// Health is not admin.
	conn, _ := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health without credential: %v", err)
	}

	// Audit: one line per mutating call, refusals included; reads none.
	var audits []map[string]any
	for _, r := range logs.records("audit") {
		if r["level"] == "INFO" {
			audits = append(audits, r)
		}
	}
	if len(audits) != 3 {
		t.Fatalf("audit lines %v, want 3 (refused, OK, NotFound)", audits)
	}
	want := []struct{ who, result, errSub string }{
		{"vera", "PermissionDenied", "needs the operator role"}, {"otto", "OK", ""}, {"otto", "NotFound", "not registered"}}
	for i, w := range want {
		r := audits[i]
		if r["who"] != w.who || r["via"] != "token" || r["method"] != "/coordinator.v1.AdminService/StartUpdate" || r["result"] != w.result || r["level"] != "INFO" {
			t.Errorf("audit %d: %v", i, r)
		}
		if e, _ := r["error"].(string); !strings.Contains(e, w.errSub) || (w.errSub == "") != (e == "") {
			t.Errorf("audit %d error %q, want %q", i, e, w.errSub)
		}
	}
	if n := testutil.ToFloat64(a.refusals.WithLabelValues(reasonUnauthenticated)); n != 3 {
		t.Errorf("unauthenticated refusals %v, want 3", n)
	}
	if n := testutil.ToFloat64(a.refusals.WithLabelValues(reasonForbidden)); n != 1 {
		t.Errorf("forbidden refusals %v, want 1", n)
	}
}

func TestOpenMode(t *testing.T) {
	a, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if !a.Open() {
		t.Fatal("not open without a CA or tokens")
	}
	addr, f := serve(t, a)
	c := dial(t, addr)
	if _, err := c.StartUpdate(context.Background(), &pb.StartUpdateRequest{Service: "a"}); err != nil {
		t.Fatal(err)
	}
	if p := f.last(); p.Role != Operator || p.Via != ViaOpen {
		t.Errorf("open mode principal %+v", p)
	}
}

// Reloading: a token added works, one removed stops working, and a bad
// file keeps the previous tokens.
func TestTokenFileReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	toks := writeTokens(t, path, map[string]string{"vera": "viewer"})
	a, err := New(Config{TokenFile: path, CheckInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.byToken(toks["vera"]); err != nil {
		t.Fatal(err)
	}
	newTok, _ := NewToken()
	writeTokenFile(t, path, TokenFile{Tokens: []TokenEntry{{Name: "otto", Role: "operator", SHA256: HashToken(newTok)}}})
	time.Sleep(5 * time.Millisecond)
	if p, err := a.byToken(newTok); err != nil || p.Name != "otto" || p.Role != Operator {
		t.Errorf("added token: %+v %v", p, err)
	}
	if _, err := a.byToken(toks["vera"]); status.Code(err) != codes.Unauthenticated {
		t.Errorf("removed token: %v", err)
	}
	if err := os.WriteFile(path, []byte("tokens: [{name: otto, role: root}]"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if _, err := a.byToken(newTok); err != nil {
		t.Errorf("a bad file replaced the previous tokens: %v", err)
	}
}

// certs issues a server certificate and client certificates of the given
// SPIFFE IDs, all from one CA, and returns the server's and each client's
// transport credentials.
func certs(t *testing.T, clients ...string) (credentials.TransportCredentials, []credentials.TransportCredentials) {
	t.Helper()
	dir := t.TempDir()
	ca := testca.New(t, "ca")
	sf := ca.WriteFiles(t, dir, "server", testca.Leaf{})
	sr, err := tlsfiles.New(tlsfiles.Files{Cert: sf.Cert, Key: sf.Key, CA: sf.CA})
	if err != nil {
		t.Fatal(err)
	}
	scfg, err := sr.ServerConfig(tlsfiles.VerifyIfGiven)
	if err != nil {
		t.Fatal(err)
	}
	var out []credentials.TransportCredentials
	for i, id := range clients {
		leaf := testca.Leaf{URIs: []string{id}}
		if id == "" { // no client certificate
			cr, err := tlsfiles.New(tlsfiles.Files{CA: sf.CA})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, credentials.NewTLS(cr.ClientConfig("localhost")))
			continue
		}
		cf := ca.WriteFiles(t, dir, "client"+string(rune('a'+i)), leaf)
		cr, err := tlsfiles.New(tlsfiles.Files{Cert: cf.Cert, Key: cf.Key, CA: cf.CA})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, credentials.NewTLS(cr.ClientConfig("localhost")))
	}
	return credentials.NewTLS(scfg), out
}

// A principal forwarded by a replica (authenticated by its certificate)
// is accepted; the same from any other peer, with or without a
// certificate, is refused with PermissionDenied and counted. Identities
// of the identity roles file get their role.
func TestForwardedPrincipalOnlyFromReplicas(t *testing.T) {
	const replica, oncall, dev = "spiffe://test/ns/coordinator/sa/replica", "spiffe://test/ns/ops/sa/oncall", "spiffe://test/ns/dev/sa/x"
	srvCreds, cl := certs(t, replica, oncall, dev, "")
	ids := filepath.Join(t.TempDir(), "ids.yaml")
	if err := os.WriteFile(ids, []byte("identities:\n- {identity: "+oncall+", role: operator}\n- {identity: \"spiffe://test/ns/dev/*\", role: viewer}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	a, err := New(Config{ClientCerts: true, IdentityRolesFile: ids, OwnIdentity: replica, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	addr, f := serve(t, a, grpc.Creds(srvCreds))
	forged := Principal{Name: "mallory", Role: Operator, Via: ViaToken}
	fwdCtx := func() context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), PrincipalMetadataKey, encodePrincipal(forged))
	}

	// From the replica: accepted, as forwarded.
	rc := dial(t, addr, grpc.WithTransportCredentials(cl[0]))
	if _, err := rc.StartUpdate(fwdCtx(), &pb.StartUpdateRequest{Service: "a"}); err != nil {
		t.Fatalf("forward from a replica: %v", err)
	}
	want := Principal{Name: "mallory", Role: Operator, Via: ViaForwarded, ForwardedBy: replica, OriginVia: ViaToken}
	if p := f.last(); p != want {
		t.Errorf("handler saw %+v, want %+v", p, want)
	}
	// The replica itself, forwarding nothing, has no admin role.
	if _, err := rc.GetGraph(context.Background(), &pb.GetGraphRequest{}); status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), "has no admin role") {
		t.Errorf("replica's own call: %v", err)
	}
	// From an operator identity that is not a replica: refused.
	oc := dial(t, addr, grpc.WithTransportCredentials(cl[1]))
	_, err = oc.GetGraph(fwdCtx(), &pb.GetGraphRequest{})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), oncall+" is not one") {
		t.Errorf("forward from a non-replica: %v", err)
	}
	// Without a forward, that identity is an operator by the file.
	if _, err := oc.StartUpdate(context.Background(), &pb.StartUpdateRequest{Service: "a"}); err != nil {
		t.Errorf("mTLS operator: %v", err)
	}
	if p := f.last(); p != (Principal{Name: oncall, Role: Operator, Via: ViaMTLS}) {
		t.Errorf("handler saw %+v", p)
	}
	// A prefix-matched viewer.
	dc := dial(t, addr, grpc.WithTransportCredentials(cl[2]))
	if _, err := dc.GetGraph(context.Background(), &pb.GetGraphRequest{}); err != nil {
		t.Errorf("mTLS viewer read: %v", err)
	}
	if _, err := dc.StartUpdate(context.Background(), &pb.StartUpdateRequest{Service: "a"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("mTLS viewer StartUpdate: %v", err)
	}
	// No client certificate at all, forwarding: refused as forged.
	nc := dial(t, addr, grpc.WithTransportCredentials(cl[3]))
	if _, err := nc.GetGraph(fwdCtx(), &pb.GetGraphRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("forward without a certificate: %v", err)
	}
	if _, err := nc.GetGraph(context.Background(), &pb.GetGraphRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no certificate, no token: %v", err)
	}
	if n := testutil.ToFloat64(a.refusals.WithLabelValues(reasonForgedForward)); n != 2 {
		t.Errorf("forged forward refusals %v, want 2", n)
	}
	if w := logs.records("forwarded principal refused"); len(w) != 2 || w[0]["peer"] != oncall {
		t.Errorf("refusals logged: %v", w)
	}
}

// The follower's side: OutgoingContext passes the principal on (with a
// replica certificate) or the token (without), and marks the call
// forwarded so that its audit line is at debug.
func TestOutgoingContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	toks := writeTokens(t, path, map[string]string{"otto": "operator"})
	var logs logBuffer
	a, err := New(Config{TokenFile: path, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	p := Principal{Name: "otto", Role: Operator, Via: ViaToken}
	note := &callNote{}
	ctx := context.WithValue(withCredential(NewContext(context.Background(), p), toks["otto"]), noteKey{}, note)
	ctx = metadata.AppendToOutgoingContext(ctx, PrincipalMetadataKey, "name=x&role=operator")
	md, _ := metadata.FromOutgoingContext(a.OutgoingContext(ctx))
	if got := md.Get("authorization"); len(got) != 1 || got[0] != "Bearer "+toks["otto"] || len(md.Get(PrincipalMetadataKey)) != 0 {
		t.Errorf("without a replica certificate: %v", md)
	}
	if !note.forwarded {
		t.Error("not marked forwarded")
	}
	a.done(p, note, AdminPrefix+"StartUpdate", nil)
	if r := logs.records("audit"); len(r) != 1 || r[0]["level"] != "DEBUG" {
		t.Errorf("a forwarded call's audit: %v", r)
	}

	a.cfg.ForwardPrincipal = true
	md, _ = metadata.FromOutgoingContext(a.OutgoingContext(ctx))
	got := md.Get(PrincipalMetadataKey)
	if len(got) != 1 || len(md.Get("authorization")) != 0 {
		t.Fatalf("with a replica certificate: %v", md)
	}
	if dp, err := decodePrincipal(got[0]); err != nil || dp != p {
		t.Errorf("forwarded %+v %v, want %+v", dp, err, p)
	}
}

func TestHTTPMiddlewareAndSessions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	toks := writeTokens(t, path, map[string]string{"vera": "viewer", "otto": "operator"})
	a, err := New(Config{TokenFile: path, CheckInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var seen Principal
	mux := http.NewServeMux()
	mux.Handle("/v1/", a.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, _ = FromContext(r.Context())
		if len(r.Header.Values("Grpc-Metadata-Coordinator-Principal")) > 0 {
			t.Error("a client's principal header reached the gateway")
		}
	})))
	mux.Handle(SessionPath, a.SessionHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	do := func(method, path string, hdr map[string]string) *http.Response {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	body := func(resp *http.Response) map[string]any {
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return m
	}

	resp := do("GET", "/v1/graph", map[string]string{"Grpc-Metadata-Coordinator-Principal": "name=x&role=operator&via=token"})
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("no credential: %d %v", resp.StatusCode, resp.Header)
	}
	if m := body(resp); m["code"] != float64(16) || !strings.Contains(m["message"].(string), "bearer token") {
		t.Errorf("401 body %v", m)
	}
	resp = do("GET", "/v1/graph", map[string]string{"Authorization": "Bearer " + toks["vera"]})
	if resp.StatusCode != 200 || seen != (Principal{Name: "vera", Role: Viewer, Via: ViaToken}) {
		t.Errorf("bearer: %d, %+v", resp.StatusCode, seen)
	}

	// Session: POST with a token sets the cookie.
	if r := do("POST", SessionPath, nil); r.StatusCode != 401 {
		t.Errorf("POST %s without a token: %d", SessionPath, r.StatusCode)
	}
	if r := do("POST", SessionPath, map[string]string{"Authorization": "Bearer nope"}); r.StatusCode != 401 {
		t.Errorf("POST %s with a bad token: %d", SessionPath, r.StatusCode)
	}
	resp = do("POST", SessionPath, map[string]string{"Authorization": "Bearer " + toks["otto"]})
	if resp.StatusCode != 200 {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	if m := body(resp); m["name"] != "otto" || m["role"] != "operator" {
		t.Errorf("login answer %v", m)
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies %v", cookies)
	}
	c := cookies[0]
	if c.Name != SessionCookie || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.MaxAge != 12*3600 || c.Secure || len(c.Value) < 43 {
		t.Errorf("cookie %+v", c)
	}
	if raw := resp.Header.Get("Set-Cookie"); !strings.Contains(raw, "HttpOnly") || !strings.Contains(raw, "SameSite=Strict") {
		t.Errorf("Set-Cookie %q", raw)
	}
	cookie := map[string]string{"Cookie": SessionCookie + "=" + c.Value}
	resp = do("GET", "/v1/graph", cookie)
	if resp.StatusCode != 200 || seen != (Principal{Name: "otto", Role: Operator, Via: ViaCookie}) {
		t.Errorf("cookie: %d, %+v", resp.StatusCode, seen)
	}
	if m := body(do("GET", SessionPath, cookie)); m["name"] != "otto" || m["via"] != "cookie" {
		t.Errorf("whoami %v", m)
	}
	// A second session, to log out of.
	resp = do("POST", SessionPath, map[string]string{"Authorization": "Bearer " + toks["vera"]})
	vc := map[string]string{"Cookie": SessionCookie + "=" + resp.Cookies()[0].Value}
	if r := do("DELETE", SessionPath, vc); r.StatusCode != 204 || r.Cookies()[0].MaxAge >= 0 {
		t.Errorf("logout: %d %v", r.StatusCode, r.Cookies())
	}
	if r := do("GET", "/v1/graph", vc); r.StatusCode != 401 {
		t.Errorf("after logout: %d", r.StatusCode)
	}

	// Removing otto's token from the file revokes the session.
	writeTokenFile(t, path, TokenFile{Tokens: []TokenEntry{{Name: "vera", Role: "viewer", SHA256: HashToken(toks["vera"])}}})
	time.Sleep(5 * time.Millisecond)
	resp = do("GET", "/v1/graph", cookie)
	if m := body(resp); resp.StatusCode != 401 || !strings.Contains(m["message"].(string), `token "otto" is no longer in the token file`) {
		t.Errorf("revoked session: %d %v", resp.StatusCode, m)
	}
}

func TestSessionTableBounded(t *testing.T) {
	s := newSessions(time.Hour, 3)
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	var vals []string
	for i := range 5 {
		v, _, err := s.create(token{name: string(rune('a' + i))}, "")
		if err != nil {
			t.Fatal(err)
		}
		vals = append(vals, v)
	}
	if s.len() != 3 {
		t.Errorf("%d sessions, want 3", s.len())
	}
	if _, ok := s.get(vals[0]); ok {
		t.Error("the oldest session survived")
	}
	if se, ok := s.get(vals[4]); !ok || se.name != "e" {
		t.Error("the newest session is gone")
	}
	now = now.Add(2 * time.Hour)
	if _, ok := s.get(vals[4]); ok {
		t.Error("an expired session answered")
	}
	if _, _, err := s.create(token{name: "f"}, ""); err != nil {
		t.Fatal(err)
	}
	if s.len() != 1 {
		t.Errorf("%d sessions after the sweep, want 1", s.len())
	}
}
