package kubernetes

import (
	"fmt"
	"net"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// The names the manifests and README.md agree on.
const (
	statefulSetName = "coordinator"
	headlessName    = "coordinator-peer"
	clientSvcName   = "coordinator"
	coordContainer  = "coordinatord"
	sidecarName     = "coordsidecar"
)

// secretKeys are the Secrets README.md tells to create, and the keys each
// must hold.
var secretKeys = map[string][]string{
	"coordinator-tls":          {"tls.crt", "tls.key", "ca.crt"},
	"coordinator-admin-tokens": {"tokens.yaml"},
	"portal-tls":               {"tls.crt", "tls.key", "ca.crt"},
}

// pod is a workload's pod template with where it came from.
type pod struct {
	name     string
	selector *metav1.LabelSelector
	tmpl     *corev1.PodTemplateSpec
	claims   []corev1.PersistentVolumeClaim // a StatefulSet's volumeClaimTemplates
}

func pods(objs []object) []pod {
	var ps []pod
	for _, s := range all[*appsv1.StatefulSet](objs) {
		ps = append(ps, pod{"StatefulSet " + s.Name, s.Spec.Selector, &s.Spec.Template, s.Spec.VolumeClaimTemplates})
	}
	for _, d := range all[*appsv1.Deployment](objs) {
		ps = append(ps, pod{"Deployment " + d.Name, d.Spec.Selector, &d.Spec.Template, nil})
	}
	return ps
}

// selects reports whether a Service-style selector (a label map) picks
// the pod template's labels.
func selects(sel map[string]string, tmpl *corev1.PodTemplateSpec) bool {
	return len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(tmpl.Labels))
}

func TestManifestsDecodeStrictly(t *testing.T) {
	objs := loadManifests(t)
	kinds := map[string]int{}
	seen := map[string]bool{}
	for _, o := range objs {
		kinds[o.meta.Kind]++
		m, err := metaOf(o.obj)
		if err != nil {
			t.Fatalf("%s: %v", o, err)
		}
		key := o.meta.Kind + "/" + m.GetName()
		if seen[key] {
			t.Errorf("%s: %s defined twice", o, key)
		}
		seen[key] = true
		if m.GetNamespace() != "" {
			t.Errorf("%s: namespace %q: the manifests are applied into the namespace of one's choice", o, m.GetNamespace())
		}
	}
	want := map[string]int{"ServiceAccount": 2, "Service": 3, "StatefulSet": 1, "PodDisruptionBudget": 1, "Deployment": 1}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Errorf("kinds %v, want %v", kinds, want)
	}

	// kustomization.yaml lists every manifest, and nothing else.
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	b, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.Kind != "Kustomization" || !slices.Equal(slices.Sorted(slices.Values(k.Resources)), manifestFiles(t)) {
		t.Errorf("kustomization.yaml: kind %q resources %v, want Kustomization of %v", k.Kind, k.Resources, manifestFiles(t))
	}
}

func metaOf(obj any) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return m, nil
}

// Selectors match the templates' labels; every Service selects a pod
// template and targets ports it has; the StatefulSet's serviceName is the
// headless Service, which publishes not-ready addresses; the PDB keeps
// two of the three members.
func TestSelectorsAndServices(t *testing.T) {
	objs := loadManifests(t)
	for _, p := range pods(objs) {
		sel, err := metav1.LabelSelectorAsSelector(p.selector)
		if err != nil || sel.Empty() {
			t.Fatalf("%s: selector %v: %v", p.name, p.selector, err)
		}
		if !sel.Matches(labels.Set(p.tmpl.Labels)) {
			t.Errorf("%s: selector %v does not match its template's labels %v", p.name, p.selector, p.tmpl.Labels)
		}
		if p.tmpl.Spec.ServiceAccountName == "" || !slices.ContainsFunc(all[*corev1.ServiceAccount](objs),
			func(sa *corev1.ServiceAccount) bool { return sa.Name == p.tmpl.Spec.ServiceAccountName }) {
			t.Errorf("%s: service account %q is not in the manifests", p.name, p.tmpl.Spec.ServiceAccountName)
		}
	}
	services := map[string]*corev1.Service{}
	for _, svc := range all[*corev1.Service](objs) {
		services[svc.Name] = svc
		var picked []pod
		for _, p := range pods(objs) {
			if selects(svc.Spec.Selector, p.tmpl) {
				picked = append(picked, p)
			}
		}
		if len(picked) != 1 {
			t.Errorf("Service %s: selector %v picks %d pod templates, want 1", svc.Name, svc.Spec.Selector, len(picked))
			continue
		}
		for _, sp := range svc.Spec.Ports {
			if sp.TargetPort.Type != intstr.String {
				t.Errorf("Service %s port %s: targetPort %v, want a named container port", svc.Name, sp.Name, sp.TargetPort.String())
				continue
			}
			if _, ok := podPort(picked[0].tmpl, sp.TargetPort.StrVal); !ok {
				t.Errorf("Service %s port %s: %s has no container port %q", svc.Name, sp.Name, picked[0].name, sp.TargetPort.StrVal)
			}
		}
	}

	sts := only[*appsv1.StatefulSet](t, objs)
	if sts.Name != statefulSetName || sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Errorf("StatefulSet %s replicas %v, want %s with 3", sts.Name, sts.Spec.Replicas, statefulSetName)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %q: the members of a new cluster must start together (Parallel)", sts.Spec.PodManagementPolicy)
	}
	peer := services[sts.Spec.ServiceName]
	switch {
	case sts.Spec.ServiceName != headlessName || peer == nil:
		t.Errorf("serviceName %q, want the headless Service %s", sts.Spec.ServiceName, headlessName)
	case peer.Spec.ClusterIP != corev1.ClusterIPNone:
		t.Errorf("Service %s: clusterIP %q, want None (headless: per-pod DNS names)", peer.Name, peer.Spec.ClusterIP)
	case !peer.Spec.PublishNotReadyAddresses:
		t.Errorf("Service %s: publishNotReadyAddresses false: members could not find each other before they are ready", peer.Name)
	case !selects(peer.Spec.Selector, &sts.Spec.Template):
		t.Errorf("Service %s does not select the StatefulSet's pods", peer.Name)
	}
	if peer != nil {
		for _, name := range []string{"etcd-peer", "etcd-client", "grpc", "http"} {
			if !slices.ContainsFunc(peer.Spec.Ports, func(p corev1.ServicePort) bool { return p.TargetPort.StrVal == name }) {
				t.Errorf("Service %s has no port for %s", peer.Name, name)
			}
		}
	}
	client := services[clientSvcName]
	if client == nil || client.Spec.ClusterIP == corev1.ClusterIPNone || !selects(client.Spec.Selector, &sts.Spec.Template) {
		t.Errorf("client Service %s: missing, headless or not selecting the StatefulSet's pods", clientSvcName)
	}

	pdb := only[*policyv1.PodDisruptionBudget](t, objs)
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Errorf("PDB %s: selector %v does not select the StatefulSet's pods (%v)", pdb.Name, pdb.Spec.Selector, err)
	}
	for _, d := range all[*appsv1.Deployment](objs) {
		if err == nil && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("PDB %s also selects Deployment %s's pods", pdb.Name, d.Name)
		}
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.String() != "1" || pdb.Spec.MinAvailable != nil {
		t.Errorf("PDB %s: maxUnavailable %v minAvailable %v, want maxUnavailable 1 (two of three keep the etcd quorum)",
			pdb.Name, pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable)
	}
}

// podPort finds a named container port in any container of tmpl.
func podPort(tmpl *corev1.PodTemplateSpec, name string) (corev1.ContainerPort, bool) {
	for _, c := range tmpl.Spec.Containers {
		if p, ok := containerPort(&c, name); ok {
			return p, true
		}
	}
	return corev1.ContainerPort{}, false
}

func containerPort(c *corev1.Container, name string) (corev1.ContainerPort, bool) {
	i := slices.IndexFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == name })
	if i < 0 {
		return corev1.ContainerPort{}, false
	}
	return c.Ports[i], true
}

// probePort is the container port a probe points at ("" and false if
// it names none of c's ports).
func probePort(c *corev1.Container, p *corev1.Probe) (corev1.ContainerPort, bool) {
	var port intstr.IntOrString
	switch {
	case p.HTTPGet != nil:
		port = p.HTTPGet.Port
	case p.TCPSocket != nil:
		port = p.TCPSocket.Port
	case p.GRPC != nil:
		port = intstr.FromInt32(p.GRPC.Port)
	default:
		return corev1.ContainerPort{}, false
	}
	if port.Type == intstr.String {
		return containerPort(c, port.StrVal)
	}
	i := slices.IndexFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.ContainerPort == port.IntVal })
	if i < 0 {
		return corev1.ContainerPort{}, false
	}
	return c.Ports[i], true
}

// Every container has a liveness and a readiness probe that differ, each
// on one of its own ports; coordinatord's readiness is grpc.health.v1 on
// the plaintext health listener, its liveness only a TCP connect, and a
// startup probe covers the wait for the other members.
func TestProbes(t *testing.T) {
	objs := loadManifests(t)
	for _, p := range pods(objs) {
		for _, c := range p.tmpl.Spec.Containers {
			where := p.name + " container " + c.Name
			if c.LivenessProbe == nil || c.ReadinessProbe == nil {
				t.Errorf("%s: liveness %v readiness %v, want both", where, c.LivenessProbe != nil, c.ReadinessProbe != nil)
				continue
			}
			if fmt.Sprint(c.LivenessProbe.ProbeHandler) == fmt.Sprint(c.ReadinessProbe.ProbeHandler) {
				t.Errorf("%s: liveness and readiness probe the same thing", where)
			}
			for kind, pr := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
				if pr == nil {
					continue
				}
				if _, ok := probePort(&c, pr); !ok {
					t.Errorf("%s: %s probe %v is not on one of its ports", where, kind, pr.ProbeHandler)
				}
			}
		}
	}
	sts := only[*appsv1.StatefulSet](t, objs)
	c := container(t, &sts.Spec.Template.Spec, coordContainer)
	health, _ := containerPort(c, "health")
	addr := flags(t, c.Args)["--health-addr"]
	if _, port, _ := net.SplitHostPort(addr); port != strconv.Itoa(int(health.ContainerPort)) {
		t.Errorf("--health-addr %q does not listen on the container port health (%d)", addr, health.ContainerPort)
	}
	if r := c.ReadinessProbe; r.GRPC == nil || r.GRPC.Port != health.ContainerPort {
		t.Errorf("coordinatord readiness %v: want the gRPC health probe on the health port %d", r.ProbeHandler, health.ContainerPort)
	}
	if l := c.LivenessProbe; l.TCPSocket == nil || l.TCPSocket.Port.StrVal != "health" {
		t.Errorf("coordinatord liveness %v: want a TCP connect to the health port", l.ProbeHandler)
	}
	if s := c.StartupProbe; s == nil || s.TCPSocket == nil || s.PeriodSeconds*s.FailureThreshold < 120 {
		t.Errorf("coordinatord startup probe %v: want a TCP probe allowing minutes for the members to meet", s)
	}
}

// Every volumeMount has a volume (or a claim template) and every volume
// is mounted; Secret volumes name the Secrets README.md documents,
// mounted read-only; every absolute path in a container's arguments is
// under one of its mounts, a Secret's file one of its documented keys.
func TestVolumesAndPaths(t *testing.T) {
	objs := loadManifests(t)
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	pathArg := regexp.MustCompile(`^(/[^/\s]+)+$`)
	for _, p := range pods(objs) {
		spec := &p.tmpl.Spec
		volumes := map[string]*corev1.Volume{}
		for i := range spec.Volumes {
			volumes[spec.Volumes[i].Name] = &spec.Volumes[i]
		}
		claims := map[string]bool{}
		for _, c := range p.claims {
			claims[c.Name] = true
		}
		mounted := map[string]bool{}
		for _, c := range spec.Containers {
			where := p.name + " container " + c.Name
			for _, m := range c.VolumeMounts {
				mounted[m.Name] = true
				v := volumes[m.Name]
				if v == nil && !claims[m.Name] {
					t.Errorf("%s: volumeMount %s has no volume", where, m.Name)
				}
				if v != nil && v.Secret != nil {
					if _, ok := secretKeys[v.Secret.SecretName]; !ok || !strings.Contains(string(readme), v.Secret.SecretName) {
						t.Errorf("%s: Secret %q is not one README.md documents", where, v.Secret.SecretName)
					}
					if !m.ReadOnly {
						t.Errorf("%s: Secret volume %s mounted writable", where, m.Name)
					}
					if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0 {
						t.Errorf("%s: Secret volume %s mode %v readable by others", where, m.Name, v.Secret.DefaultMode)
					}
				}
			}
			args := c.Args
			if len(c.Command) > 1 {
				args = append(slices.Clone(c.Command[1:]), args...)
			}
			for _, a := range args {
				_, val, _ := strings.Cut(a, "=")
				if !pathArg.MatchString(val) {
					continue
				}
				i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return strings.HasPrefix(val, m.MountPath+"/") || val == m.MountPath })
				if i < 0 {
					t.Errorf("%s: %s is under none of its mounts", where, a)
					continue
				}
				m := c.VolumeMounts[i]
				if v := volumes[m.Name]; v != nil && v.Secret != nil {
					if key := strings.TrimPrefix(val, m.MountPath+"/"); !slices.Contains(secretKeys[v.Secret.SecretName], key) {
						t.Errorf("%s: %s: %q is not a key of Secret %s (%v)", where, a, key, v.Secret.SecretName, secretKeys[v.Secret.SecretName])
					}
				}
			}
		}
		for name := range volumes {
			if !mounted[name] {
				t.Errorf("%s: volume %s is mounted nowhere", p.name, name)
			}
		}
	}
	sts := only[*appsv1.StatefulSet](t, objs)
	c := container(t, &sts.Spec.Template.Spec, coordContainer)
	dataDir := flags(t, c.Args)["--data-dir"]
	i := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == dataDir })
	if i < 0 || len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Name != c.VolumeMounts[i].Name {
		t.Errorf("--data-dir %s is not the mount of the StatefulSet's volumeClaimTemplate", dataDir)
	}
}

// The command line of coordinatord: every member named in --initial-cluster
// by its stable DNS name under the headless Service, exactly the
// StatefulSet's replicas; this member's name and advertised addresses
// from $(POD_NAME); the ports those name are the container's.
func TestClusterWiring(t *testing.T) {
	objs := loadManifests(t)
	sts := only[*appsv1.StatefulSet](t, objs)
	c := container(t, &sts.Spec.Template.Spec, coordContainer)
	f := flags(t, c.Args)
	port := func(name string) string {
		p, ok := containerPort(c, name)
		if !ok {
			t.Fatalf("no container port %s", name)
		}
		return strconv.Itoa(int(p.ContainerPort))
	}
	self := "$(POD_NAME)." + sts.Spec.ServiceName + ".$(POD_NAMESPACE).svc"
	for flag, want := range map[string]string{
		"--name":                    "$(POD_NAME)",
		"--peer-listen-addr":        "$(POD_IP):" + port("etcd-peer"),
		"--etcd-client-addr":        self + ":" + port("etcd-client"),
		"--etcd-client-listen-addr": "$(POD_IP):" + port("etcd-client"),
		"--grpc-addr":               "0.0.0.0:" + port("grpc"),
		"--http-addr":               "0.0.0.0:" + port("http"),
		"--advertise-grpc":          self + ":" + port("grpc"),
		"--advertise-http":          self + ":" + port("http"),
		"--health-addr":             "0.0.0.0:" + port("health"),
	} {
		if f[flag] != want {
			t.Errorf("%s=%q, want %q", flag, f[flag], want)
		}
	}
	var members []string
	for m := range strings.SplitSeq(f["--initial-cluster"], ",") {
		members = append(members, m)
	}
	if int32(len(members)) != *sts.Spec.Replicas {
		t.Errorf("--initial-cluster names %d members, the StatefulSet runs %d", len(members), *sts.Spec.Replicas)
	}
	for i, m := range members {
		pod := fmt.Sprintf("%s-%d", sts.Name, i)
		if want := fmt.Sprintf("%s=https://%s.%s.$(POD_NAMESPACE).svc:%s", pod, pod, sts.Spec.ServiceName, port("etcd-peer")); m != want {
			t.Errorf("--initial-cluster member %d: %q, want %q", i, m, want)
		}
	}
	for _, fl := range []string{"--tls-cert", "--tls-key", "--client-ca", "--peer-cert", "--peer-key", "--peer-ca", "--token-file"} {
		if f[fl] == "" {
			t.Errorf("%s missing: TLS and admin tokens everywhere", fl)
		}
	}
	if _, insecure := f["--insecure"]; insecure {
		t.Error("--insecure")
	}
	checkEnv(t, "coordinatord", c)
}

// checkEnv checks that every $(VAR) in c's command and arguments is
// defined in its env, that POD_NAME, POD_NAMESPACE and POD_IP come from the
// downward API, and GOMEMLIMIT from its own memory limit.
func checkEnv(t *testing.T, where string, c *corev1.Container) {
	t.Helper()
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	for _, a := range append(slices.Clone(c.Command), c.Args...) {
		for _, m := range varRef.FindAllStringSubmatch(a, -1) {
			if _, ok := env[m[1]]; !ok {
				t.Errorf("%s: %q uses $(%s), not in its env (the kubelet would leave it as it is)", where, a, m[1])
			}
		}
	}
	for name, field := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "POD_IP": "status.podIP"} {
		if e, ok := env[name]; ok && (e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != field) {
			t.Errorf("%s: env %s not from the downward API's %s", where, name, field)
		}
	}
	e, ok := env["GOMEMLIMIT"]
	if !ok || e.ValueFrom == nil || e.ValueFrom.ResourceFieldRef == nil || e.ValueFrom.ResourceFieldRef.Resource != "limits.memory" ||
		(e.ValueFrom.ResourceFieldRef.ContainerName != "" && e.ValueFrom.ResourceFieldRef.ContainerName != c.Name) {
		t.Errorf("%s: GOMEMLIMIT %+v, want its own limits.memory", where, e.ValueFrom)
	}
}

// varRef is a kubelet variable reference in command and args.
var varRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// Pods and containers run as a fixed non-root user, read-only, with no
// privilege escalation, no capabilities and the runtime's seccomp
// profile; every container requests CPU and memory and has a memory limit.
func TestSecurityAndResources(t *testing.T) {
	for _, p := range pods(loadManifests(t)) {
		sc := p.tmpl.Spec.SecurityContext
		if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 ||
			sc.FSGroup == nil || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod securityContext %+v: want runAsNonRoot, a non-root runAsUser, fsGroup, seccomp RuntimeDefault", p.name, sc)
		}
		if p.tmpl.Spec.AutomountServiceAccountToken == nil || *p.tmpl.Spec.AutomountServiceAccountToken {
			t.Errorf("%s: mounts a service account token it does not need", p.name)
		}
		for _, c := range p.tmpl.Spec.Containers {
			where := p.name + " container " + c.Name
			cs := c.SecurityContext
			switch {
			case cs == nil:
				t.Errorf("%s: no securityContext", where)
			case cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation:
				t.Errorf("%s: allowPrivilegeEscalation not false", where)
			case cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem:
				t.Errorf("%s: root filesystem writable", where)
			case cs.Capabilities == nil || !slices.Equal(cs.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(cs.Capabilities.Add) > 0:
				t.Errorf("%s: capabilities %+v, want drop ALL", where, cs.Capabilities)
			case cs.RunAsNonRoot == nil || !*cs.RunAsNonRoot, cs.RunAsUser != nil && *cs.RunAsUser == 0:
				t.Errorf("%s: may run as root", where)
			case cs.Privileged != nil && *cs.Privileged:
				t.Errorf("%s: privileged", where)
			case cs.SeccompProfile == nil || cs.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
				t.Errorf("%s: seccomp %+v, want RuntimeDefault", where, cs.SeccompProfile)
			}
			r := c.Resources
			if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() ||
				r.Limits.Memory().Cmp(*r.Requests.Memory()) < 0 {
				t.Errorf("%s: resources %v: want CPU and memory requests and a memory limit at least the request", where, r)
			}
		}
	}
}

// The example application: its second container is coordsidecar, dialing
// the client Service's gRPC port in the pod's namespace; the sidecar
// forwards to the app's port, advertises its inbound port, and the app's
// Service sends callers through the sidecar.
func TestExampleAppWiring(t *testing.T) {
	objs := loadManifests(t)
	d := only[*appsv1.Deployment](t, objs)
	spec := &d.Spec.Template.Spec
	if len(spec.Containers) != 2 || spec.Containers[1].Name != sidecarName {
		t.Fatalf("Deployment %s containers %d, want the app and %s second", d.Name, len(spec.Containers), sidecarName)
	}
	app, sc := &spec.Containers[0], &spec.Containers[1]
	if len(sc.Command) != 1 || path.Base(sc.Command[0]) != "coordsidecar" {
		t.Errorf("sidecar command %v", sc.Command)
	}
	f := flags(t, sc.Args)

	var client *corev1.Service
	for _, s := range all[*corev1.Service](objs) {
		if s.Name == clientSvcName {
			client = s
		}
	}
	if client == nil {
		t.Fatalf("no client Service %s", clientSvcName)
	}
	sts := only[*appsv1.StatefulSet](t, objs)
	grpc := slices.IndexFunc(client.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "grpc" })
	if grpc < 0 || !selects(client.Spec.Selector, &sts.Spec.Template) {
		t.Fatalf("client Service %s: no grpc port, or not selecting the StatefulSet", client.Name)
	}
	if cp, _ := containerPort(container(t, &sts.Spec.Template.Spec, coordContainer), client.Spec.Ports[grpc].TargetPort.StrVal); cp.Name != "grpc" {
		t.Errorf("client Service's grpc port targets %q, not coordinatord's gRPC port", client.Spec.Ports[grpc].TargetPort.StrVal)
	}
	if want := fmt.Sprintf("%s.$(POD_NAMESPACE).svc:%d", client.Name, client.Spec.Ports[grpc].Port); f["--coordinator"] != want {
		t.Errorf("--coordinator=%q, want the client Service %q", f["--coordinator"], want)
	}
	appPort, ok := containerPort(app, "app")
	if !ok || f["--app"] != "127.0.0.1:"+strconv.Itoa(int(appPort.ContainerPort)) {
		t.Errorf("--app=%q, want the app container's port %d on loopback", f["--app"], appPort.ContainerPort)
	}
	for flag, port := range map[string]string{"--listen": "inbound", "--advertise": "inbound", "--admin": "admin"} {
		cp, ok := containerPort(sc, port)
		if _, p, _ := net.SplitHostPort(f[flag]); !ok || p != strconv.Itoa(int(cp.ContainerPort)) {
			t.Errorf("%s=%q is not on the sidecar's %s port", flag, f[flag], port)
		}
	}
	if f["--advertise"] != fmt.Sprintf("$(POD_IP):%s", portOf(f["--listen"])) {
		t.Errorf("--advertise=%q, want the pod IP and the inbound port", f["--advertise"])
	}
	if f["--service"] == "" || f["--version"] == "" || f["--dep"] == "" {
		t.Errorf("--service %q --version %q --dep %q: want all", f["--service"], f["--version"], f["--dep"])
	}
	if r := sc.ReadinessProbe; r == nil || r.HTTPGet == nil || r.HTTPGet.Path != "/healthz" || r.HTTPGet.Port.StrVal != "admin" {
		t.Errorf("sidecar readiness %v: want /healthz on the admin port", r)
	}
	for _, fl := range []string{"--tls-ca", "--tls-cert", "--tls-key"} {
		if f[fl] == "" {
			t.Errorf("sidecar %s missing", fl)
		}
	}
	checkEnv(t, "coordsidecar", sc)

	for _, s := range all[*corev1.Service](objs) {
		if selects(s.Spec.Selector, &d.Spec.Template) {
			for _, p := range s.Spec.Ports {
				if p.TargetPort.StrVal != "inbound" {
					t.Errorf("Service %s port %s targets %q: callers must go through the sidecar's inbound port", s.Name, p.Name, p.TargetPort.StrVal)
				}
			}
		}
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
