package server_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	"github.com/coordinator/coordinator/internal/simsidecar"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// handled is one admin call a replica's gRPC server handled: what it sent
// back (the responses of a stream in order) and how it ended.
type handled struct {
	sent []proto.Message
	err  error
}

// recorder records the admin calls one replica's gRPC server handles, with
// their answers, through server interceptors.
type recorder struct {
	mu    sync.Mutex
	calls map[string][]handled // by full method name
}

func isAdmin(method string) bool {
	return strings.HasPrefix(method, "/"+pb.AdminService_ServiceDesc.ServiceName+"/")
}

func (r *recorder) add(method string, h handled) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[method] = append(r.calls[method], h)
}

// since returns the calls of method after the first n.
func (r *recorder) since(method string, n int) []handled {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls[method][min(n, len(r.calls[method])):])
}

func (r *recorder) count(method string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls[method])
}

func (r *recorder) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	if isAdmin(info.FullMethod) {
		var sent []proto.Message
		if m, ok := resp.(proto.Message); ok && err == nil {
			sent = append(sent, proto.Clone(m))
		}
		r.add(info.FullMethod, handled{sent: sent, err: err})
	}
	return resp, err
}

type sentStream struct {
	grpc.ServerStream
	mu   sync.Mutex
	sent []proto.Message
}

func (s *sentStream) SendMsg(m any) error {
	if pm, ok := m.(proto.Message); ok {
		s.mu.Lock()
		s.sent = append(s.sent, proto.Clone(pm))
		s.mu.Unlock()
	}
	return s.ServerStream.SendMsg(m)
}

func (r *recorder) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if !isAdmin(info.FullMethod) {
		return h(srv, ss)
	}
	w := &sentStream{ServerStream: ss}
	err := h(srv, w)
	w.mu.Lock()
	r.add(info.FullMethod, handled{sent: w.sent, err: err})
	w.mu.Unlock()
	return err
}

// adminMethods lists AdminService's methods from its descriptor, in
// declaration order, and checks that the generated grpc.ServiceDesc (what
// the server registers) has exactly these.
func adminMethods(t *testing.T) []protoreflect.MethodDescriptor {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(pb.AdminService_ServiceDesc.ServiceName))
	if err != nil {
		t.Fatal(err)
	}
	sd := d.(protoreflect.ServiceDescriptor)
	var fromProto, fromDesc []string
	var out []protoreflect.MethodDescriptor
	for i := range sd.Methods().Len() {
		m := sd.Methods().Get(i)
		out = append(out, m)
		fromProto = append(fromProto, string(m.Name()))
	}
	for _, m := range pb.AdminService_ServiceDesc.Methods {
		fromDesc = append(fromDesc, m.MethodName)
	}
	for _, s := range pb.AdminService_ServiceDesc.Streams {
		fromDesc = append(fromDesc, s.StreamName)
	}
	slices.Sort(fromDesc)
	if sorted := slices.Sorted(slices.Values(fromProto)); !slices.Equal(sorted, fromDesc) {
		t.Fatalf("AdminService methods: descriptor %v, grpc.ServiceDesc %v", sorted, fromDesc)
	}
	return out
}

// invoke calls method on conn with req, as any client would, and returns
// what came back: one response for a unary call, every message of a stream
// until it ends.
func invoke(ctx context.Context, conn *grpc.ClientConn, m protoreflect.MethodDescriptor, req proto.Message) ([]proto.Message, error) {
	full := "/" + pb.AdminService_ServiceDesc.ServiceName + "/" + string(m.Name())
	out, err := protoregistry.GlobalTypes.FindMessageByName(m.Output().FullName())
	if err != nil {
		return nil, err
	}
	if !m.IsStreamingServer() && !m.IsStreamingClient() {
		resp := out.New().Interface()
		if err := conn.Invoke(ctx, full, req, resp); err != nil {
			return nil, err
		}
		return []proto.Message{resp}, nil
	}
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: m.IsStreamingServer(), ClientStreams: m.IsStreamingClient()}, full)
	if err != nil {
		return nil, err
	}
	if err := st.SendMsg(req); err != nil {
		return nil, err
	}
	if err := st.CloseSend(); err != nil {
		return nil, err
	}
	var got []proto.Message
	for {
		resp := out.New().Interface()
		if err := st.RecvMsg(resp); errors.Is(err, io.EOF) {
			return got, nil
		} else if err != nil {
			return got, err
		}
		got = append(got, resp)
	}
}

// Every AdminService method called on a follower is answered by the
// leader: the leader's server handles it, and what the follower returns is
// exactly what the leader answered (responses, or code and message), not an
// Unimplemented and not an answer from the follower's own (empty) state.
// GetCluster is the one method every replica answers itself. Methods come
// from the service descriptor, so a method added to the proto without
// forwarding fails here (it gets an empty request unless listed below).
func TestFollowerForwardsEveryAdminMethod(t *testing.T) {
	var recs []*recorder // in the order of cl.Replicas
	record := func(cfg *server.Config) {
		r := &recorder{calls: make(map[string][]handled)}
		recs = append(recs, r)
		cfg.GRPCServerOptions = append(cfg.GRPCServerOptions,
			grpc.ChainUnaryInterceptor(r.unary), grpc.ChainStreamInterceptor(r.stream))
	}
	cl := servertest.StartCluster(t, 3, record)
	leader := cl.Leader(within)
	f := cl.Follower(leader)
	li, fi := slices.Index(cl.Replicas, leader), slices.Index(cl.Replicas, f)
	other := 3 - li - fi // the third replica
	ctx, cancel := context.WithTimeout(context.Background(), 2*within)
	defer cancel()

	// State only the leader has: sessions, a live transaction, an update.
	a1 := leader.Sidecar("a-1", "a", "v1", "b")
	leader.Sidecar("a-2", "a", "v2", "b")
	leader.Sidecar("b-1", "b", "v1")
	leader.Sidecar("b-2", "b", "v2")
	servertest.Send(t, a1, simsidecar.Begin(servertest.TxnID(1), 1), simsidecar.Call(servertest.TxnID(1), 1, "b", 2))
	// WF waits: the transaction runs on a and may call b, so a is not free.
	upd, err := leader.Admin.StartUpdate(ctx, &pb.StartUpdateRequest{Service: "a", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_WF})
	if err != nil {
		t.Fatal(err)
	}

	// Requests that find something; a method not listed gets an empty one.
	requests := map[string]proto.Message{
		"GetFreeness":      &pb.GetFreenessRequest{Service: "a"},
		"ListTransactions": &pb.ListTransactionsRequest{Service: "b"},
		"StartUpdate":      &pb.StartUpdateRequest{Service: "b", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_CV},
		"GetUpdate":        &pb.GetUpdateRequest{Id: upd.Id},
		"AbortUpdate":      &pb.AbortUpdateRequest{Id: upd.Id, Reason: "forwarding test"},
		"WatchUpdate":      &pb.WatchUpdateRequest{Id: upd.Id}, // aborted just before: one message, then the end
		"GetService":       &pb.GetServiceRequest{Service: "a"},
		"DryRunUpdate":     &pb.StartUpdateRequest{Service: "a", ToVersion: "v2", Strategy: pb.Strategy_STRATEGY_BF},
	}
	// Forwarded in part: the leader's stream, asked without the cluster
	// view, which the follower adds, its own. It runs until its deadline.
	const partial = "WatchState"
	const local = "GetCluster" // answered by every replica itself, on purpose

	conn, err := grpc.NewClient(f.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	seen, partialSeen := false, false
	for _, m := range adminMethods(t) {
		name := string(m.Name())
		full := "/" + pb.AdminService_ServiceDesc.ServiceName + "/" + name
		req := requests[name]
		if req == nil {
			mt, err := protoregistry.GlobalTypes.FindMessageByName(m.Input().FullName())
			if err != nil {
				t.Fatal(err)
			}
			req = mt.New().Interface()
		}
		before := make([]int, len(recs))
		for i, r := range recs {
			before[i] = r.count(full)
		}
		timeout := 10 * time.Second
		if name == partial {
			timeout = 2 * time.Second
		}
		cctx, ccancel := context.WithTimeout(ctx, timeout)
		got, err := invoke(cctx, conn, m, req)
		ccancel()
		if name == partial {
			// The streams end, the follower's and the leader's, as the
			// deadline cuts them: wait until both are recorded.
			servertest.Eventually(t, 5*time.Second, name+" handled", func() bool {
				return recs[fi].count(full) > before[fi] && recs[li].count(full) > before[li]
			})
		}
		if status.Code(err) == codes.Unimplemented {
			t.Errorf("%s on a follower: %v", name, err)
			continue
		}
		if n := len(recs[fi].since(full, before[fi])); n != 1 {
			t.Errorf("%s: the follower's server handled %d calls, want 1", name, n)
		}
		if n := len(recs[other].since(full, before[other])); n != 0 {
			t.Errorf("%s: the third replica handled %d calls, want 0", name, n)
		}
		atLeader := recs[li].since(full, before[li])

		if name == local {
			seen = true
			if len(atLeader) != 0 {
				t.Errorf("%s was forwarded to the leader; every replica answers it itself", name)
			}
			if err != nil {
				t.Errorf("%s on a follower: %v", name, err)
				continue
			}
			v := got[0].(*pb.Cluster)
			if v.AnsweredBy != f.Self().Name || v.Leader.GetName() != leader.Self().Name || len(v.Replicas) != 3 {
				t.Errorf("%s on the follower: %v, want answered by %s, leader %s, 3 replicas", name, v, f.Self().Name, leader.Self().Name)
			}
			continue
		}
		if len(atLeader) != 1 {
			t.Errorf("%s on a follower (answered %v, %v): the leader handled %d calls, want 1 (forwarded)", name, got, err, len(atLeader))
			continue
		}
		if name == partial {
			partialSeen = true
			if len(got) == 0 || len(atLeader[0].sent) == 0 {
				t.Errorf("%s: the follower sent %d messages, the leader %d (%v)", name, len(got), len(atLeader[0].sent), err)
				continue
			}
			fs, ls := got[0].(*pb.WatchStateResponse).GetSnapshot(), atLeader[0].sent[0].(*pb.WatchStateResponse).GetSnapshot()
			if ls.GetCluster() != nil || fs.GetCluster().GetAnsweredBy() != f.Self().Name || fs.GetCluster().GetLeader().GetName() != leader.Self().Name {
				t.Errorf("%s: cluster view from the follower %v, from the leader %v; want the follower's own only", name, fs.GetCluster(), ls.GetCluster())
			}
			fs = proto.CloneOf(fs)
			fs.Cluster = nil
			if !proto.Equal(fs, ls) || len(fs.GetServices()) != 2 {
				t.Errorf("%s: the follower's first snapshot (without its cluster view)\n%v\nthe leader's\n%v", name, fs, ls)
			}
			continue
		}
		want := atLeader[0]
		if ws, gs := status.Convert(want.err), status.Convert(err); (want.err == nil) != (err == nil) ||
			ws.Code() != gs.Code() || ws.Message() != gs.Message() {
			t.Errorf("%s: the follower answered error %v, the leader %v", name, err, want.err)
			continue
		}
		if len(got) != len(want.sent) {
			t.Errorf("%s: the follower answered %d messages, the leader sent %d", name, len(got), len(want.sent))
			continue
		}
		for i := range got {
			if !proto.Equal(got[i], want.sent[i]) {
				t.Errorf("%s: message %d from the follower\n%v\nthe leader sent\n%v", name, i, got[i], want.sent[i])
			}
		}
		t.Logf("%s: forwarded; %d messages, error %v", name, len(got), err)
	}
	if !partialSeen {
		t.Errorf("AdminService has no %s any more: update this test", partial)
	}
	if !seen {
		t.Errorf("AdminService has no %s any more: update this test", local)
	}
}
