package kubernetes

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/security/adminauth"
	"github.com/coordinator/coordinator/security/testca"
	"github.com/coordinator/coordinator/security/tlsfiles"
)

// testNamespace is the namespace the pods are taken to run in.
const testNamespace = "coord-test"

// TestStatefulSetCommandFormsACluster runs the StatefulSet's coordinatord
// command and arguments as they stand in coordinator.yaml, once for each
// replica, and sees the members form one embedded etcd cluster with one
// leader, each answering the readiness probe SERVING.
//
// What stands in for Kubernetes, pod i (coordinator-i) of n:
//
//   - The kubelet's expansion of $(VAR) from the container's env:
//     POD_NAME=coordinator-i, POD_NAMESPACE=coord-test, POD_IP=127.0.0.(i+1)
//     (127.B.0.(i+1) when those ports are taken there: loopbackPods),
//     GOMEMLIMIT the memory limit in bytes (also set in the process's env).
//   - DNS: every pod's name under the headless Service,
//     coordinator-j.coordinator-peer.coord-test.svc, is replaced by its
//     "pod IP" 127.0.0.(j+1), what the Service's DNS would answer; the
//     test cannot add DNS records.
//   - The pod's network namespace: its own loopback address. 0.0.0.0 (every
//     address of the pod) becomes 127.0.0.(i+1), so the three pods bind the
//     manifest's ports unchanged without colliding.
//   - Volumes: each mountPath becomes a directory of the pod's own; the
//     Secrets' keys are written there (a certificate from security/testca
//     whose SANs hold every pod's DNS name, the client Service's name,
//     127.0.0.1-3, which loopback connections come from, and the
//     replicas' SPIFFE ID; a token file with one operator token), the
//     claim and emptyDir are empty directories.
//   - The image's /coordinatord is the binary built from this tree.
//
// Nothing else of the command line changes. If one of those fixed ports
// is taken on each of the loopback blocks tried, the test is skipped,
// saying which.
func TestStatefulSetCommandFormsACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds coordinatord and runs three of them")
	}
	objs := loadManifests(t)
	sts := only[*appsv1.StatefulSet](t, objs)
	spec := &sts.Spec.Template.Spec
	c := container(t, spec, coordContainer)
	n := int(*sts.Spec.Replicas)
	podDNS := func(i int) string {
		return fmt.Sprintf("%s-%d.%s.%s.svc", sts.Name, i, sts.Spec.ServiceName, testNamespace)
	}
	podIP := loopbackPods(t, n, c)

	bin := buildBinary(t, "cmd/coordinatord")
	base := t.TempDir()
	secrets, caFile, token := secretContents(t, base, n, podIP, podDNS)

	var ds []*daemon
	for i := range n {
		pod := fmt.Sprintf("%s-%d", sts.Name, i)
		env := map[string]string{"POD_NAME": pod, "POD_NAMESPACE": testNamespace, "POD_IP": podIP(i)}
		procEnv := envOf(t, c, env)

		// The pod's volumes, as directories of its own.
		mounts := map[string]string{} // mountPath: directory
		for _, m := range c.VolumeMounts {
			dir := filepath.Join(base, pod, m.Name)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			mounts[m.MountPath] = dir
			v := volume(spec, m.Name)
			if v != nil && v.Secret != nil {
				keys, ok := secrets[v.Secret.SecretName]
				if !ok {
					t.Fatalf("volume %s: Secret %s: the test knows no contents for it", m.Name, v.Secret.SecretName)
				}
				for k, b := range keys {
					if err := os.WriteFile(filepath.Join(dir, k), b, 0o400); err != nil {
						t.Fatal(err)
					}
				}
			}
		}

		// The loopback stand-ins for DNS and the pod's addresses.
		var pairs []string
		for j := range n {
			pairs = append(pairs, podDNS(j), podIP(j))
		}
		hosts := strings.NewReplacer(append(pairs, "0.0.0.0:", podIP(i)+":")...)
		argv := slices.Concat(c.Command, c.Args)
		for k, a := range argv {
			a = expand(a, env)
			flag, val, isFlag := strings.Cut(a, "=")
			if !isFlag {
				flag, val = "", a
			}
			val = hosts.Replace(val)
			// The longest mount path a path is under, once.
			var under string
			for mp := range mounts {
				if (val == mp || strings.HasPrefix(val, mp+"/")) && len(mp) > len(under) {
					under = mp
				}
			}
			if under != "" {
				val = mounts[under] + strings.TrimPrefix(val, under)
			}
			if isFlag {
				a = flag + "=" + val
			} else {
				a = val
			}
			if strings.Contains(a, "$(") || strings.Contains(a, ".svc") || strings.Contains(a, "0.0.0.0") {
				t.Fatalf("pod %s: argument %q left unmapped", pod, a)
			}
			argv[k] = a
		}
		if filepath.Base(argv[0]) != "coordinatord" {
			t.Fatalf("command %q: want the image's coordinatord", argv[0])
		}
		argv[0] = bin
		t.Logf("%s: %s", pod, strings.Join(argv[1:], " "))
		ds = append(ds, startDaemon(t, pod, argv, procEnv))
	}

	// The cluster as each replica sees it, through its advertised gRPC
	// address (over TLS, verified against the CA, with the token), until
	// all agree on one leader and three healthy etcd members.
	grpcPort, _ := containerPort(c, "grpc")
	healthPort, _ := containerPort(c, "health")
	peerPort, _ := containerPort(c, "etcd-peer")
	clientPort, _ := containerPort(c, "etcd-client")
	admins := make([]pb.AdminServiceClient, n)
	healths := make([]healthpb.HealthClient, n)
	for i := range n {
		admins[i] = pb.NewAdminServiceClient(dial(t, net.JoinHostPort(podIP(i), strconv.Itoa(int(grpcPort.ContainerPort))),
			grpc.WithTransportCredentials(credentials.NewTLS(servertest.ClientTLS(t, tlsfiles.Files{CA: caFile}))), adminauth.WithToken(token)))
		healths[i] = healthpb.NewHealthClient(dial(t, net.JoinHostPort(podIP(i), strconv.Itoa(int(healthPort.ContainerPort))),
			grpc.WithTransportCredentials(insecure.NewCredentials())))
	}
	begin := time.Now()
	deadline := begin.Add(2 * time.Minute)
	var why error
	for {
		for _, d := range ds {
			d.checkRunning(t)
		}
		var view *pb.Cluster
		if view, why = clusterFormed(admins, healths, n, podIP, peerPort.ContainerPort, clientPort.ContainerPort, grpcPort.ContainerPort); why == nil {
			t.Logf("cluster formed in %v: leader %s (%s)", time.Since(begin).Round(time.Millisecond), view.Leader.Name, view.Leader.GrpcAddress)
			break
		}
		if time.Now().After(deadline) {
			for _, d := range ds {
				t.Logf("%s stderr:\n%s", d.name, d.stderr())
			}
			t.Fatalf("no cluster after %v: %v", time.Since(begin).Round(time.Second), why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// clusterFormed asks every replica for the cluster view and its gRPC
// health (the readiness probe), and returns a view once they all report
// the same leader among the n replicas at their advertised addresses, n
// healthy etcd members with one Raft leader and the advertised peer and
// client URLs, and SERVING; else why not.
func clusterFormed(admins []pb.AdminServiceClient, healths []healthpb.HealthClient, n int, podIP func(int) string,
	peerPort, clientPort, grpcPort int32) (*pb.Cluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var leader string
	var last *pb.Cluster
	for i := range admins {
		h, err := healths[i].Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
			return nil, fmt.Errorf("pod %d: readiness (gRPC health): %v %v", i, h.GetStatus(), err)
		}
		v, err := admins[i].GetCluster(ctx, &pb.GetClusterRequest{})
		if err != nil {
			return nil, fmt.Errorf("pod %d: GetCluster: %w", i, err)
		}
		if v.Leader == nil {
			return nil, fmt.Errorf("pod %d: no leader", i)
		}
		if leader != "" && v.Leader.Name != leader {
			return nil, fmt.Errorf("pod %d sees leader %s, another %s", i, v.Leader.Name, leader)
		}
		leader = v.Leader.Name
		var replicas []string
		for _, r := range v.Replicas {
			replicas = append(replicas, r.Name+"@"+r.GrpcAddress)
		}
		slices.Sort(replicas)
		var want []string
		for j := range n {
			want = append(want, fmt.Sprintf("coordinator-%d@%s:%d", j, podIP(j), grpcPort))
		}
		if !slices.Equal(replicas, want) {
			return nil, fmt.Errorf("pod %d: replicas %v, want %v", i, replicas, want)
		}
		if len(v.Members) != n {
			return nil, fmt.Errorf("pod %d: %d etcd members, want %d", i, len(v.Members), n)
		}
		raftLeaders := 0
		for _, m := range v.Members {
			j := slices.IndexFunc(want, func(w string) bool { return strings.HasPrefix(w, m.Name+"@") })
			switch {
			case j < 0:
				return nil, fmt.Errorf("pod %d: etcd member %q is none of the pods", i, m.Name)
			case !m.Healthy || m.Learner:
				return nil, fmt.Errorf("pod %d: etcd member %s healthy %v learner %v: %s", i, m.Name, m.Healthy, m.Learner, m.Error)
			case !slices.Equal(m.PeerUrls, []string{fmt.Sprintf("https://%s:%d", podIP(j), peerPort)}) ||
				!slices.Equal(m.ClientUrls, []string{fmt.Sprintf("https://%s:%d", podIP(j), clientPort)}):
				return nil, fmt.Errorf("pod %d: etcd member %s peer %v client %v, want the advertised names", i, m.Name, m.PeerUrls, m.ClientUrls)
			}
			if m.RaftLeader {
				raftLeaders++
			}
		}
		if raftLeaders != 1 {
			return nil, fmt.Errorf("pod %d: %d Raft leaders", i, raftLeaders)
		}
		last = v
	}
	return last, nil
}

// expand is the kubelet's expansion of $(VAR) in command and args: a
// variable of env is replaced, any other reference left as it is.
func expand(s string, env map[string]string) string {
	return varRef.ReplaceAllStringFunc(s, func(ref string) string {
		if v, ok := env[ref[2:len(ref)-1]]; ok {
			return v
		}
		return ref
	})
}

// envOf is the process environment of container c in a pod whose
// downward-API fields are fields (POD_NAME, ...): this process's, without
// coordinatord's own variables, plus c's env as the kubelet sets it. It
// adds c's resourceFieldRef values to fields, for expand.
func envOf(t *testing.T, c *corev1.Container, fields map[string]string) []string {
	t.Helper()
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "COORDINATORD_") || strings.HasPrefix(kv, "GOMEMLIMIT=") || strings.HasPrefix(kv, "GOGC=")
	})
	for _, e := range c.Env {
		var v string
		switch {
		case e.ValueFrom == nil:
			v = expand(e.Value, fields)
		case e.ValueFrom.FieldRef != nil:
			var ok bool
			if v, ok = fields[e.Name]; !ok {
				t.Fatalf("env %s: field %s: the test does not stand in for it", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		case e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory":
			v = strconv.FormatInt(c.Resources.Limits.Memory().Value(), 10)
			fields[e.Name] = v
		default:
			t.Fatalf("env %s: %+v: the test does not stand in for it", e.Name, e.ValueFrom)
		}
		env = append(env, e.Name+"="+v)
	}
	return env
}

func volume(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// secretContents makes the Secrets' keys: the replicas' certificate (one
// for all, as README.md says) and CA, and a token file with one operator
// token. It returns them by Secret and key, the CA's file, and the token.
func secretContents(t *testing.T, dir string, n int, podIP, podDNS func(int) string) (map[string]map[string][]byte, string, string) {
	t.Helper()
	ca := testca.New(t, "coordinator k8s test CA")
	leaf := testca.Leaf{CommonName: "coordinator",
		URIs: []string{"spiffe://cluster.local/ns/" + testNamespace + "/sa/coordinator"},
		// The client Service's name, as README.md's certificate has it.
		DNSNames: []string{clientSvcName + "." + testNamespace + ".svc"},
		// Loopback connections come from 127.0.0.1 whatever address they
		// go to: etcd checks a peer's certificate against it.
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	for i := range n {
		leaf.DNSNames = append(leaf.DNSNames, podDNS(i))
		if ip := net.ParseIP(podIP(i)); !slices.ContainsFunc(leaf.IPs, ip.Equal) {
			leaf.IPs = append(leaf.IPs, ip)
		}
	}
	certPEM, keyPEM := ca.Issue(t, leaf)
	caFile := filepath.Join(dir, "ca.crt")
	ca.WriteCA(t, caFile)
	token, err := adminauth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	tokens := fmt.Sprintf("tokens:\n- {name: k8s-test, role: operator, sha256: %s}\n", adminauth.HashToken(token))
	secrets := map[string]map[string][]byte{
		"coordinator-tls":          {"tls.crt": certPEM, "tls.key": keyPEM, "ca.crt": ca.PEM},
		"coordinator-admin-tokens": {"tokens.yaml": []byte(tokens)},
	}
	for name, keys := range secrets {
		if got := slices.Sorted(mapKeys(keys)); !slices.Equal(got, slices.Sorted(slices.Values(secretKeys[name]))) {
			t.Fatalf("Secret %s: test keys %v, README.md's %v", name, got, secretKeys[name])
		}
	}
	return secrets, caFile, token
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// loopbackPods returns the pods' IPs: 127.B.0.(i+1) for pod i, with B
// the first of 0 to 3 where every container port of c is free on every
// pod's address (127.0.0.1 and up may run a coordinator on these very
// ports, as docs/SECURITY.md's walk-through does). If none is, the test
// is skipped, saying what is taken.
func loopbackPods(t *testing.T, n int, c *corev1.Container) func(int) string {
	t.Helper()
	var taken []string
	for b := range 4 {
		ip := func(i int) string { return fmt.Sprintf("127.%d.0.%d", b, i+1) }
		if addr, err := bindable(n, ip, c); err != nil {
			taken = append(taken, fmt.Sprintf("%s (%v)", addr, err))
			continue
		}
		return ip
	}
	t.Skipf("the manifest's fixed ports cannot be bound on any of 127.{0,1,2,3}.0.1-%d: %s; free them to run the test",
		n, strings.Join(taken, ", "))
	return nil
}

// bindable checks that every port of c can be bound on each pod's ip.
func bindable(n int, ip func(int) string, c *corev1.Container) (string, error) {
	for i := range n {
		for _, p := range c.Ports {
			addr := net.JoinHostPort(ip(i), strconv.Itoa(int(p.ContainerPort)))
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return addr, err
			}
			l.Close()
		}
	}
	return "", nil
}

func dial(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// buildBinary builds a command of this module into a temporary directory.
func buildBinary(t *testing.T, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, "github.com/coordinator/coordinator/"+pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// daemon is one coordinatord process standing for a pod.
type daemon struct {
	name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    strings.Builder
	exited chan struct{}
	err    error
}

func (d *daemon) Write(p []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.Write(p)
}

func (d *daemon) stderr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String()
}

func startDaemon(t *testing.T, name string, argv, env []string) *daemon {
	t.Helper()
	d := &daemon{name: name, exited: make(chan struct{})}
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Env = env
	d.cmd.Stdout, d.cmd.Stderr = d, d
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = d.cmd.Process.Kill()
			<-d.exited
		}
	})
	return d
}

// checkRunning fails the test if the process has exited (skips it if it
// lost one of its fixed ports to another process meanwhile).
func (d *daemon) checkRunning(t *testing.T) {
	t.Helper()
	select {
	case <-d.exited:
	default:
		return
	}
	out := d.stderr()
	if strings.Contains(out, "address already in use") {
		t.Skipf("%s lost a fixed port to another process (%v):\n%s", d.name, d.err, out)
	}
	t.Fatalf("%s exited: %v\n%s", d.name, d.err, out)
}
