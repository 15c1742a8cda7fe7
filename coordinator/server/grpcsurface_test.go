package server_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// cutHealthReads makes the etcd health check (storage.Check reads the key
// "health") fail while cut is set, as an unreachable etcd would; everything
// else goes through, so the replicas stop cleanly afterwards.
type cutHealthReads struct {
	clientv3.KV
	cut *atomic.Bool
}

func (kv cutHealthReads) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	if key == "health" && kv.cut.Load() {
		return nil, errors.New("test: etcd cut off")
	}
	return kv.KV.Get(ctx, key, opts...)
}

// watchHealth follows a replica's grpc.health.v1 Watch of service and
// returns a function that waits for the status want.
func watchHealth(t *testing.T, conn *grpc.ClientConn, service string) func(want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatal(err)
	}
	statuses := make(chan healthpb.HealthCheckResponse_ServingStatus, 100)
	go func() {
		defer close(statuses)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			statuses <- r.Status
		}
	}()
	return func(want healthpb.HealthCheckResponse_ServingStatus) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case st, ok := <-statuses:
				if !ok {
					t.Fatalf("health watch of %q ended before %v", service, want)
				}
				if st == want {
					return
				}
			case <-timeout:
				t.Fatalf("health of %q: no %v within 30s", service, want)
			}
		}
	}
}

// grpc.health.v1 says SERVING on the leader and on a follower that can
// forward to it, NOT_SERVING on both while etcd does not answer, SERVING
// again once it does, and NOT_SERVING once the replica is closing.
func TestGRPCHealthFollowsWhetherTheReplicaCanServe(t *testing.T) {
	var cut atomic.Bool
	c := servertest.StartCluster(t, 2, func(cfg *server.Config) {
		cfg.WrapKV = func(kv clientv3.KV) clientv3.KV { return cutHealthReads{kv, &cut} }
	})
	leader := c.Leader(time.Minute)
	follower := c.Follower(leader)
	var waits []func(healthpb.HealthCheckResponse_ServingStatus)
	for _, r := range []*servertest.Server{leader, follower} {
		for _, svc := range []string{"", "coordinator.v1.AdminService", "coordinator.v1.SidecarService"} {
			waits = append(waits, watchHealth(t, r.Conn, svc))
		}
	}
	for _, w := range waits {
		w(healthpb.HealthCheckResponse_SERVING)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, r := range []*servertest.Server{leader, follower} {
		resp, err := healthpb.NewHealthClient(r.Conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%s: Check = %v, %v; want SERVING", r.Self().Name, resp, err)
		}
		_, err = healthpb.NewHealthClient(r.Conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "no.such.Service"})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("Check of an unknown service: %v, want NotFound", err)
		}
	}

	cut.Store(true)
	for _, w := range waits {
		w(healthpb.HealthCheckResponse_NOT_SERVING)
	}
	// /health agrees on the follower (the leader's report is its coordinator's).
	if code := follower.REST("/health", nil); code != 503 {
		t.Errorf("follower /health while etcd is cut off: %d, want 503", code)
	}
	cut.Store(false)
	for _, w := range waits {
		w(healthpb.HealthCheckResponse_SERVING)
	}

	// A replica that stops says NOT_SERVING and ends its watches: an open
	// Watch does not hold its graceful stop.
	conn, err := grpc.NewClient(follower.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w := watchHealth(t, conn, "")
	w(healthpb.HealthCheckResponse_SERVING)
	start := time.Now()
	follower.Stop()
	w(healthpb.HealthCheckResponse_NOT_SERVING)
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the follower took %v to stop with a health watch open", took)
	}
}

// Server reflection lists the services and hands out their descriptors, so
// that a client with no proto files (grpcurl) can call the admin API: this
// test does what grpcurl does, down to a dynamic GetCluster call.
func TestServerReflectionServesTheAPIWithoutProtoFiles(t *testing.T) {
	ts := servertest.Start(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(ts.Conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *reflectionpb.ServerReflectionRequest) *reflectionpb.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if e := resp.GetErrorResponse(); e != nil {
			t.Fatalf("reflection %v: %s", req, e.ErrorMessage)
		}
		return resp
	}

	// grpcurl list
	var names []string
	for _, s := range ask(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}).GetListServicesResponse().Service {
		names = append(names, s.Name)
	}
	slices.Sort(names)
	t.Logf("services: %s", strings.Join(names, " "))
	for _, want := range []string{"coordinator.v1.AdminService", "coordinator.v1.SidecarService",
		"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}

	// grpcurl describe coordinator.v1.AdminService: the file and its
	// imports, built into descriptors with nothing compiled in.
	files := new(protoregistry.Files)
	pending := []*descriptorpb.FileDescriptorProto{}
	for _, raw := range ask(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "coordinator.v1.AdminService"},
	}).GetFileDescriptorResponse().FileDescriptorProto {
		fd := new(descriptorpb.FileDescriptorProto)
		if err := proto.Unmarshal(raw, fd); err != nil {
			t.Fatal(err)
		}
		pending = append(pending, fd)
	}
	// Register in dependency order (the answer holds the file and
	// everything it imports).
	for len(pending) > 0 {
		progress := false
		for i := 0; i < len(pending); i++ {
			f, err := protodesc.NewFile(pending[i], files)
			if err != nil {
				continue
			}
			if err := files.RegisterFile(f); err != nil {
				t.Fatal(err)
			}
			pending = slices.Delete(pending, i, i+1)
			i--
			progress = true
		}
		if !progress {
			t.Fatalf("reflection's descriptors do not resolve: %d files left, first %s", len(pending), pending[0].GetName())
		}
	}
	d, err := files.FindDescriptorByName("coordinator.v1.AdminService")
	if err != nil {
		t.Fatal(err)
	}
	svc := d.(protoreflect.ServiceDescriptor)
	m := svc.Methods().ByName("GetCluster")
	if m == nil {
		t.Fatalf("AdminService from reflection has no GetCluster (methods: %d)", svc.Methods().Len())
	}

	// grpcurl coordinator.v1.AdminService/GetCluster
	in := dynamicpb.NewMessage(m.Input())
	out := dynamicpb.NewMessage(m.Output())
	if err := ts.Conn.Invoke(ctx, "/coordinator.v1.AdminService/GetCluster", in, out); err != nil {
		t.Fatalf("dynamic GetCluster: %v", err)
	}
	js, err := protojson.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), ts.Self().Name) {
		t.Fatalf("GetCluster through reflection: %s does not name the replica %s", js, ts.Self().Name)
	}
	t.Logf("GetCluster: %s", js)
}

// Every RPC is counted and timed by go-grpc-middleware's prometheus
// provider, on the replica's /metrics.
func TestPerRPCMetrics(t *testing.T) {
	ts := servertest.Start(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 3 {
		if _, err := ts.Admin.GetCluster(ctx, &pb.GetClusterRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ts.Admin.GetFreeness(ctx, &pb.GetFreenessRequest{Service: "nosuch"}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetFreeness of an unknown service: %v", err)
	}
	body := ts.RawREST("/metrics")
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="GetCluster",grpc_service="coordinator.v1.AdminService",grpc_type="unary"} 3`,
		`grpc_server_handled_total{grpc_code="NotFound",grpc_method="GetFreeness",grpc_service="coordinator.v1.AdminService",grpc_type="unary"} 1`,
		`grpc_server_handling_seconds_count{grpc_method="GetCluster",grpc_service="coordinator.v1.AdminService",grpc_type="unary"} 3`,
		`grpc_server_started_total{grpc_method="Connect",grpc_service="coordinator.v1.SidecarService",grpc_type="bidi_stream"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
