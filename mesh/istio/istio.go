package istio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
	"github.com/coordinator/coordinator/strategy"
)

// Header is the version header: SERVICE-VERSION (see HeaderValue).
const Header = "x-version"

// APIVersion is the Istio API the manifests are written in.
const APIVersion = "networking.istio.io/v1"

// ErrInvalid is an input that cannot be rendered.
var ErrInvalid = errors.New("istio: cannot render")

// HeaderValue is the x-version value naming version of service, as the
// seed writes it: "auth-service-v1".
func HeaderValue(service, version string) string { return service + "-" + version }

// ParseHeader returns the version an x-version value names for service,
// false if it names none (another service's, or malformed).
func ParseHeader(service, value string) (string, bool) {
	v, ok := strings.CutPrefix(value, service+"-")
	if !ok || v == "" {
		return "", false
	}
	return v, true
}

// Input is the coordinator's state of one service, and where to render it.
type Input struct {
	// Service is the coordinator's name of the service.
	Service string
	// Namespace is the manifests' metadata.namespace; empty omits it (the
	// namespace kubectl applies them in).
	Namespace string
	// Host is the Kubernetes service host the rules are for (hosts of the
	// VirtualService, host of the DestinationRule and of every destination);
	// empty means Service.
	Host string
	// Versions are the versions the coordinator knows of the service.
	Versions []string
	// Default is the service's default version (where calls go outside an
	// update); empty when it has none.
	Default string
	// Update is the service's update that has not finished, nil if none.
	Update *Update
}

// Update is what rendering needs of an unfinished update.
type Update struct {
	Strategy pb.Strategy
	Phase    pb.Phase
	From, To string
	// Switched: the default is the new version, or was before a rollback
	// (strategy.State.Switched); RollingBack: aborted after the switch.
	Switched, RollingBack bool
}

// FromRecord is the Update of a stored update record that has not
// finished, as a new leader resumes it (strategy.Resume).
func FromRecord(u *pb.Update) *Update {
	st := strategy.Resume(u.GetPhase(), u.GetRollingBack(), strategy.Options{})
	return &Update{Strategy: u.GetStrategy(), Phase: u.GetPhase(), From: u.GetFromVersion(), To: u.GetToVersion(),
		Switched: st.Switched, RollingBack: st.RollingBack}
}

// Routing is what the manifests enforce.
type Routing struct {
	// Default is the version a transaction's first call goes to.
	Default string
	// Pinned: a call stamped with a version goes to it (header routes).
	Pinned bool
	// Held: the coordinator holds first calls now (BF before its switch);
	// Default is where they go if the update aborts. Istio cannot hold a
	// call: the hold is the coordinator's and the proxy's (see the package
	// doc).
	Held bool
	// Versions are the versions with a subset, sorted.
	Versions []string
	// Phase is the update's phase, PHASE_UNSPECIFIED with none.
	Phase pb.Phase
}

// Plan says what the manifests of in enforce.
func Plan(in Input) (Routing, error) {
	if in.Service == "" {
		return Routing{}, fmt.Errorf("%w: no service", ErrInvalid)
	}
	r := Routing{Default: in.Default, Pinned: true}
	vs := slices.Clone(in.Versions)
	if in.Default != "" {
		vs = append(vs, in.Default)
	}
	if u := in.Update; u != nil {
		s, err := strategy.For(u.Strategy)
		if err != nil {
			return Routing{}, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if u.From == "" || u.To == "" {
			return Routing{}, fmt.Errorf("%w: the update of %s names no from or to version", ErrInvalid, in.Service)
		}
		vs = append(vs, u.From, u.To)
		st := strategy.State{Phase: u.Phase, Switched: u.Switched, RollingBack: u.RollingBack}
		r.Phase = u.Phase
		first := s.Decide(st, strategy.Call{Used: false})
		r.Held = first.Hold
		switch {
		case first.Hold, first.Target == strategy.Old:
			r.Default = u.From
		case first.Target == strategy.New:
			r.Default = u.To
		default:
			return Routing{}, fmt.Errorf("%w: %v decides a first call to %v", ErrInvalid, strategy.Name(u.Strategy), first.Target)
		}
		again := s.Decide(st, strategy.Call{Used: true})
		r.Pinned = !again.Hold && again.Target == strategy.Same
	}
	if r.Default == "" {
		return Routing{}, fmt.Errorf("%w: %s has no default version", ErrInvalid, in.Service)
	}
	slices.Sort(vs)
	r.Versions = slices.Compact(slices.DeleteFunc(vs, func(v string) bool { return v == "" }))
	return r, nil
}

// Manifests are the rendered objects of one service.
type Manifests struct {
	Routing         Routing
	VirtualService  *networkingv1.VirtualService
	DestinationRule *networkingv1.DestinationRule
}

// Render renders in. Every version must map to a distinct subset name
// (see SubsetName).
func Render(in Input) (*Manifests, error) {
	r, err := Plan(in)
	if err != nil {
		return nil, err
	}
	host := in.Host
	if host == "" {
		host = in.Service
	}
	subsets := make(map[string]string, len(r.Versions))
	byName := map[string]string{}
	for _, v := range r.Versions {
		n, err := SubsetName(v)
		if err != nil {
			return nil, err
		}
		if prev, ok := byName[n]; ok {
			return nil, fmt.Errorf("%w: versions %q and %q both make subset %q", ErrInvalid, prev, v, n)
		}
		byName[n], subsets[v] = v, n
	}
	meta := func() metav1.ObjectMeta {
		m := metav1.ObjectMeta{
			Name:      in.Service,
			Namespace: in.Namespace,
			Labels:    map[string]string{"app.kubernetes.io/managed-by": "coordinator"},
			Annotations: map[string]string{
				"coordinator/default-version": r.Default,
			},
		}
		if r.Phase != pb.Phase_PHASE_UNSPECIFIED {
			m.Annotations["coordinator/update"] = fmt.Sprintf("%s from %s to %s, %s", strategy.Name(in.Update.Strategy),
				in.Update.From, in.Update.To, strings.TrimPrefix(r.Phase.String(), "PHASE_"))
		}
		if r.Held {
			m.Annotations["coordinator/held"] = "first calls are held by the coordinator (BF), not by Istio"
		}
		return m
	}
	route := func(v string) []*networkingv1alpha3.HTTPRouteDestination {
		return []*networkingv1alpha3.HTTPRouteDestination{{
			Destination: &networkingv1alpha3.Destination{Host: host, Subset: subsets[v]},
			Headers: &networkingv1alpha3.Headers{Response: &networkingv1alpha3.Headers_HeaderOperations{
				Set: map[string]string{Header: HeaderValue(in.Service, v)},
			}},
		}}
	}
	var http []*networkingv1alpha3.HTTPRoute
	if r.Pinned {
		for _, v := range r.Versions {
			http = append(http, &networkingv1alpha3.HTTPRoute{
				Name: "pinned-" + subsets[v],
				Match: []*networkingv1alpha3.HTTPMatchRequest{{
					Headers: map[string]*networkingv1alpha3.StringMatch{
						Header: {MatchType: &networkingv1alpha3.StringMatch_Exact{Exact: HeaderValue(in.Service, v)}},
					},
				}},
				Route: route(v),
			})
		}
	}
	http = append(http, &networkingv1alpha3.HTTPRoute{Name: "default", Route: route(r.Default)})
	m := &Manifests{Routing: r}
	m.VirtualService = &networkingv1.VirtualService{
		TypeMeta:   metav1.TypeMeta{APIVersion: APIVersion, Kind: "VirtualService"},
		ObjectMeta: meta(),
		Spec:       networkingv1alpha3.VirtualService{Hosts: []string{host}, Http: http},
	}
	dr := &networkingv1.DestinationRule{
		TypeMeta:   metav1.TypeMeta{APIVersion: APIVersion, Kind: "DestinationRule"},
		ObjectMeta: meta(),
		Spec:       networkingv1alpha3.DestinationRule{Host: host},
	}
	for _, v := range r.Versions {
		dr.Spec.Subsets = append(dr.Spec.Subsets, &networkingv1alpha3.Subset{
			Name: subsets[v], Labels: map[string]string{"version": v},
		})
	}
	m.DestinationRule = dr
	return m, nil
}

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// SubsetName is the DestinationRule subset of version: the version itself
// when it is a DNS-1123 label, as Istio requires of subset names; else the
// version in lower case with every other character made '-' ("v1.2" is
// subset "v1-2"; its label stays version: v1.2).
func SubsetName(version string) (string, error) {
	n := strings.Map(func(c rune) rune {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-':
			return c
		case c >= 'A' && c <= 'Z':
			return c - 'A' + 'a'
		}
		return '-'
	}, version)
	n = strings.Trim(n, "-")
	if len(n) > 63 || !dns1123Label.MatchString(n) {
		return "", fmt.Errorf("%w: version %q makes no subset name (a DNS-1123 label)", ErrInvalid, version)
	}
	return n, nil
}

// YAML writes the manifests as two YAML documents, the VirtualService
// then the DestinationRule, as kubectl apply -f takes them.
func (m *Manifests) YAML() ([]byte, error) {
	objs, err := m.objects()
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	for i, o := range objs {
		y, err := yaml.JSONToYAML(o)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	return b.Bytes(), nil
}

// JSON writes the manifests as a Kubernetes List (kind: List, apiVersion:
// v1) of the VirtualService and the DestinationRule, indented.
func (m *Manifests) JSON() ([]byte, error) {
	objs, err := m.objects()
	if err != nil {
		return nil, err
	}
	list := struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Items      []json.RawMessage `json:"items"`
	}{"v1", "List", objs}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(list); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// objects are the manifests in JSON, without the status the types carry
// (the mesh writes it, not whoever applies them).
func (m *Manifests) objects() ([]json.RawMessage, error) {
	var out []json.RawMessage
	for _, o := range []any{m.VirtualService, m.DestinationRule} {
		b, err := json.Marshal(o)
		if err != nil {
			return nil, err
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(b, &fields); err != nil {
			return nil, err
		}
		delete(fields, "status")
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(fields); err != nil {
			return nil, err
		}
		out = append(out, bytes.TrimSpace(buf.Bytes()))
	}
	return out, nil
}
