package istio_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/coordinator/coordinator/internal/loadsim"
	"github.com/coordinator/coordinator/mesh/istio"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

const svc = "auth-service"

// decoded is one rendering as read back strictly.
type decoded struct {
	vs *networkingv1.VirtualService
	dr *networkingv1.DestinationRule
}

// strictSpec decodes the spec of a manifest (its JSON) with protojson,
// which refuses unknown fields: the client-go types' own UnmarshalJSON
// (jsonpb with AllowUnknownFields) would accept a misspelt field inside
// spec, so yaml.UnmarshalStrict alone is strict only outside it.
func strictSpec(t *testing.T, doc []byte, into proto.Message) {
	t.Helper()
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		t.Fatalf("YAML to JSON: %v", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(j, &top); err != nil {
		t.Fatal(err)
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(top["spec"], into); err != nil {
		t.Fatalf("spec does not decode strictly: %v\n%s", err, top["spec"])
	}
}

// decodeYAML reads the rendered YAML strictly into the client-go types:
// exactly a VirtualService then a DestinationRule, no unknown field at any
// level, and the spec equal to what a strict protojson decode gives.
func decodeYAML(t *testing.T, y []byte) decoded {
	t.Helper()
	docs := bytes.Split(y, []byte("\n---\n"))
	if len(docs) != 2 {
		t.Fatalf("%d YAML documents, want 2:\n%s", len(docs), y)
	}
	var d decoded
	d.vs, d.dr = &networkingv1.VirtualService{}, &networkingv1.DestinationRule{}
	if err := yaml.UnmarshalStrict(docs[0], d.vs); err != nil {
		t.Fatalf("VirtualService: %v\n%s", err, docs[0])
	}
	if err := yaml.UnmarshalStrict(docs[1], d.dr); err != nil {
		t.Fatalf("DestinationRule: %v\n%s", err, docs[1])
	}
	var vs networkingv1alpha3.VirtualService
	var dr networkingv1alpha3.DestinationRule
	strictSpec(t, docs[0], &vs)
	strictSpec(t, docs[1], &dr)
	if !proto.Equal(&vs, &d.vs.Spec) || !proto.Equal(&dr, &d.dr.Spec) {
		t.Fatalf("specs differ between the client-go types and a strict decode")
	}
	if d.vs.Kind != "VirtualService" || d.vs.APIVersion != istio.APIVersion || d.dr.Kind != "DestinationRule" || d.dr.APIVersion != istio.APIVersion {
		t.Fatalf("kinds: %s %s, %s %s", d.vs.APIVersion, d.vs.Kind, d.dr.APIVersion, d.dr.Kind)
	}
	checkCoherent(t, d)
	return d
}

// decodeJSON reads the rendered JSON List strictly, item by item.
func decodeJSON(t *testing.T, j []byte) decoded {
	t.Helper()
	var list struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Items      []json.RawMessage `json:"items"`
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&list); err != nil || list.Kind != "List" || list.APIVersion != "v1" || len(list.Items) != 2 {
		t.Fatalf("JSON list: %v %s %s %d", err, list.APIVersion, list.Kind, len(list.Items))
	}
	y0, _ := yaml.JSONToYAML(list.Items[0])
	y1, _ := yaml.JSONToYAML(list.Items[1])
	return decodeYAML(t, append(append(y0, []byte("---\n")...), y1...))
}

// checkCoherent: every destination names the host and a subset the
// DestinationRule defines, each subset is selected by a version label.
func checkCoherent(t *testing.T, d decoded) {
	t.Helper()
	subsets := map[string]bool{}
	for _, s := range d.dr.Spec.Subsets {
		if s.Labels["version"] == "" || len(s.Labels) != 1 {
			t.Errorf("subset %s labels %v", s.Name, s.Labels)
		}
		subsets[s.Name] = true
	}
	if len(d.vs.Spec.Hosts) != 1 || d.vs.Spec.Hosts[0] != d.dr.Spec.Host {
		t.Errorf("hosts %v, DestinationRule host %s", d.vs.Spec.Hosts, d.dr.Spec.Host)
	}
	for _, r := range d.vs.Spec.Http {
		for _, dst := range r.Route {
			if dst.Destination.Host != d.dr.Spec.Host || !subsets[dst.Destination.Subset] {
				t.Errorf("route %s goes to %s/%s, not a subset of the DestinationRule", r.Name, dst.Destination.Host, dst.Destination.Subset)
			}
		}
	}
	if last := d.vs.Spec.Http[len(d.vs.Spec.Http)-1]; len(last.Match) != 0 {
		t.Errorf("the last route %s has a match: a request could match none", last.Name)
	}
}

// evaluate routes a request as Istio documents HTTPRoute and
// HTTPMatchRequest: routes in order, the first that matches wins; a route
// with no match matches everything; its match list is ORed, the conditions
// of one HTTPMatchRequest ANDed; a header condition fails on an absent
// header and is exact (equal), prefix or regex (RE2, matching the whole
// value). It returns the version the subset selects and the x-version the
// route sets on the response. Conditions other than headers are not
// rendered; the evaluator refuses them rather than guess.
func evaluate(t *testing.T, d decoded, h http.Header) (version, respHeader string) {
	t.Helper()
	matches := func(m *networkingv1alpha3.HTTPMatchRequest) bool {
		if m.Uri != nil || m.Scheme != nil || m.Method != nil || m.Authority != nil || m.Port != 0 ||
			len(m.SourceLabels) > 0 || len(m.Gateways) > 0 || len(m.QueryParams) > 0 || len(m.WithoutHeaders) > 0 || m.SourceNamespace != "" {
			t.Fatalf("match %v: the evaluator handles headers only", m)
		}
		for name, sm := range m.Headers {
			vals := h.Values(name)
			if len(vals) == 0 {
				return false
			}
			v := strings.Join(vals, ",")
			switch x := sm.MatchType.(type) {
			case *networkingv1alpha3.StringMatch_Exact:
				if v != x.Exact {
					return false
				}
			case *networkingv1alpha3.StringMatch_Prefix:
				if !strings.HasPrefix(v, x.Prefix) {
					return false
				}
			case *networkingv1alpha3.StringMatch_Regex:
				if !regexp.MustCompile(`^(?:` + x.Regex + `)$`).MatchString(v) {
					return false
				}
			default:
				t.Fatalf("header %s: match type %T", name, sm.MatchType)
			}
		}
		return true
	}
	for _, r := range d.vs.Spec.Http {
		ok := len(r.Match) == 0
		for _, m := range r.Match {
			ok = ok || matches(m)
		}
		if !ok {
			continue
		}
		if len(r.Route) != 1 {
			t.Fatalf("route %s has %d destinations", r.Name, len(r.Route))
		}
		dst := r.Route[0]
		for _, s := range d.dr.Spec.Subsets {
			if s.Name == dst.Destination.Subset {
				return s.Labels["version"], dst.Headers.GetResponse().GetSet()[istio.Header]
			}
		}
		t.Fatalf("subset %s undefined", dst.Destination.Subset)
	}
	t.Fatalf("no route matched %v", h)
	return "", ""
}

// The evaluator itself, on a hand-written VirtualService: first match wins,
// exact, prefix and regex header matches, ANDed within a match and ORed
// across matches, absent headers never match.
func TestEvaluatorFollowsIstioMatchSemantics(t *testing.T) {
	doc := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: x
spec:
  hosts: [x]
  http:
  - name: both
    match:
    - headers:
        a: {exact: "1"}
        b: {prefix: "pre"}
    route: [{destination: {host: x, subset: s1}}]
  - name: regex-or-exact
    match:
    - headers:
        a: {regex: "[0-9]+x"}
    - headers:
        c: {exact: "yes"}
    route: [{destination: {host: x, subset: s2}}]
  - name: shadowed
    match:
    - headers:
        a: {exact: "1"}
    route: [{destination: {host: x, subset: s3}}]
  - name: default
    route: [{destination: {host: x, subset: s4}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: x
spec:
  host: x
  subsets:
  - {name: s1, labels: {version: v1}}
  - {name: s2, labels: {version: v2}}
  - {name: s3, labels: {version: v3}}
  - {name: s4, labels: {version: v4}}
`
	d := decodeYAML(t, []byte(doc))
	for _, c := range []struct {
		h    map[string]string
		want string
	}{
		{map[string]string{"a": "1", "b": "prefix"}, "v1"},
		{map[string]string{"a": "1", "b": "nope"}, "v3"},    // AND fails; "shadowed" is the next that matches
		{map[string]string{"a": "12x"}, "v2"},               // regex, whole value
		{map[string]string{"a": "12xy"}, "v4"},              // regex does not match a part
		{map[string]string{"c": "yes"}, "v2"},               // second match of the list
		{map[string]string{"b": "prefix"}, "v4"},            // a absent: no match
		{map[string]string{}, "v4"},                         // default
		{map[string]string{"a": "1", "b": "pre"}, "v1"},     // prefix equal to the value
		{map[string]string{"a": "9x", "c": "no"}, "v2"},     // regex matches, c irrelevant
		{map[string]string{"A": "1", "B": "prefixx"}, "v1"}, // header names are case-insensitive
	} {
		h := http.Header{}
		for k, v := range c.h {
			h.Set(k, v)
		}
		if got, _ := evaluate(t, d, h); got != c.want {
			t.Errorf("%v: routed to %s, want %s", c.h, got, c.want)
		}
	}
	// A misspelt field inside spec is refused (strictness inside spec).
	bad := strings.Replace(doc, "subset: s4", "subsett: s4", 1)
	if err := (protojson.UnmarshalOptions{}).Unmarshal(mustJSONSpec(t, strings.Split(bad, "\n---\n")[0]), &networkingv1alpha3.VirtualService{}); err == nil {
		t.Error("a misspelt spec field decodes")
	}
}

func mustJSONSpec(t *testing.T, doc string) []byte {
	j, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(j, &top); err != nil {
		t.Fatal(err)
	}
	return top["spec"]
}

// step is one moment of an update: the coordinator's state then, and where
// a new transaction's first call must go.
type step struct {
	name      string
	in        istio.Input
	newGoesTo string
}

func state(def string, u *istio.Update) istio.Input {
	return istio.Input{Service: svc, Namespace: "shop", Versions: []string{"v1", "v2"}, Default: def, Update: u}
}

func upd(k pb.Strategy, ph pb.Phase, rollingBack bool) *istio.Update {
	return istio.FromRecord(&pb.Update{Strategy: k, Phase: ph, FromVersion: "v1", ToVersion: "v2", RollingBack: rollingBack})
}

// timelines are the phases of updates of auth-service from v1 to v2, in
// order. The default version is the catalog's at that phase (it switches
// with the switch).
func timelines() map[string][]step {
	cv, wf, bf := pb.Strategy_STRATEGY_CV, pb.Strategy_STRATEGY_WF, pb.Strategy_STRATEGY_BF
	before := step{"before", state("v1", nil), "v1"}
	return map[string][]step{
		"cv": {before,
			{"preparing", state("v1", upd(cv, pb.Phase_PHASE_PREPARING, false)), "v1"},
			{"draining", state("v2", upd(cv, pb.Phase_PHASE_DRAINING, false)), "v2"},
			{"switched", state("v2", upd(cv, pb.Phase_PHASE_SWITCHED, false)), "v2"},
			{"done", state("v2", nil), "v2"}},
		"cv-abort-before-switch": {before,
			{"preparing", state("v1", upd(cv, pb.Phase_PHASE_PREPARING, false)), "v1"},
			{"aborted", state("v1", nil), "v1"}},
		"cv-abort-after-switch": {before,
			{"preparing", state("v1", upd(cv, pb.Phase_PHASE_PREPARING, false)), "v1"},
			{"draining", state("v2", upd(cv, pb.Phase_PHASE_DRAINING, false)), "v2"},
			{"rolling-back", state("v1", upd(cv, pb.Phase_PHASE_ABORTED, true)), "v1"},
			{"aborted", state("v1", nil), "v1"}},
		"wf": {before,
			{"preparing", state("v1", upd(wf, pb.Phase_PHASE_PREPARING, false)), "v1"},
			{"waiting", state("v1", upd(wf, pb.Phase_PHASE_WAITING, false)), "v1"},
			{"switched", state("v2", upd(wf, pb.Phase_PHASE_SWITCHED, false)), "v2"},
			{"done", state("v2", nil), "v2"}},
		"bf": {before,
			{"preparing", state("v1", upd(bf, pb.Phase_PHASE_PREPARING, false)), "v1"},
			{"waiting", state("v1", upd(bf, pb.Phase_PHASE_WAITING, false)), "v1"}, // held by the coordinator; v1 on abort
			{"switched", state("v2", upd(bf, pb.Phase_PHASE_SWITCHED, false)), "v2"},
			{"done", state("v2", nil), "v2"}},
	}
}

// run drives a randomized run through timeline: txns transactions start
// at random steps and call auth-service 2 to 6 times, at the same or later
// steps, interleaved at random within a step. Each call is stamped as
// coordsidecar's istio mode stamps a call Istio routes alone (the seed's
// rule): no x-version on a transaction's first call, then the version its
// earlier response's x-version named. The request is routed by the
// evaluator over the manifests rendered for the step, decoded strictly
// back; mutate, if set, alters the decoded VirtualService first. The
// oracle is told every version a transaction ran on; run returns its
// violations, and checks that each step's first calls go where the
// coordinator sends new transactions.
func run(t *testing.T, seed uint64, timeline []step, txns int, mutate func(*networkingv1alpha3.VirtualService)) (violations int, first string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	rendered := make([]decoded, len(timeline))
	for i, st := range timeline {
		m, err := istio.Render(st.in)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		y, err := m.YAML()
		if err != nil {
			t.Fatal(err)
		}
		j, err := m.JSON()
		if err != nil {
			t.Fatal(err)
		}
		rendered[i] = decodeYAML(t, y)
		if fromJSON := decodeJSON(t, j); !proto.Equal(&fromJSON.vs.Spec, &rendered[i].vs.Spec) || !proto.Equal(&fromJSON.dr.Spec, &rendered[i].dr.Spec) {
			t.Fatalf("%s: YAML and JSON renderings differ", st.name)
		}
		if mutate != nil {
			mutate(&rendered[i].vs.Spec)
		}
	}
	type call struct {
		txn   int
		step  int
		order float64
	}
	var calls []call
	for x := range txns {
		at := rng.IntN(len(timeline))
		for range 2 + rng.IntN(5) {
			calls = append(calls, call{x, at, rng.Float64()})
			if rng.IntN(3) == 0 && at < len(timeline)-1 {
				at++ // the transaction lives on into the next phase
			}
		}
	}
	// In time order: by step, then at random within one, each
	// transaction's calls in the order it makes them.
	slices.SortStableFunc(calls, func(a, b call) int {
		if a.step != b.step {
			return a.step - b.step
		}
		if a.txn == b.txn {
			return 0
		}
		if a.order < b.order {
			return -1
		}
		return 1
	})
	oracle := loadsim.NewOracle()
	learned := map[int]string{} // what the proxy remembers: txn -> version of auth-service
	for _, c := range calls {
		h := http.Header{}
		if v, ok := learned[c.txn]; ok {
			h.Set(istio.Header, istio.HeaderValue(svc, v))
		}
		h.Set("x-b3-traceid", fmt.Sprintf("%032x", c.txn+1)) // noise: other headers do not route
		got, resp := evaluate(t, rendered[c.step], h)
		if respV, ok := istio.ParseHeader(svc, resp); !ok || respV != got {
			t.Fatalf("response x-version %q for a call served by %s", resp, got)
		}
		if _, pinned := learned[c.txn]; !pinned && mutate == nil {
			if want := timeline[c.step].newGoesTo; got != want {
				t.Fatalf("%s: a new transaction's first call went to %s, the coordinator sends it to %s", timeline[c.step].name, got, want)
			}
		}
		learned[c.txn] = got
		txn := fmt.Sprintf("T%d", c.txn)
		if prev, bad := oracle.Ran(txn, svc, got); bad {
			violations++
			if first == "" {
				first = fmt.Sprintf("%s ran on %s@%s then %s@%s (step %s)", txn, svc, prev, svc, got, timeline[c.step].name)
			}
		}
	}
	return violations, first
}

// Every phase of a CV update (before, preparing, draining, switched, done,
// and both aborts), and of WF and BF, rendered, decoded strictly, and
// routed by the evaluator for a randomized run: the oracle sees no
// transaction on two versions, and new transactions go where the
// coordinator sends them at each phase.
func TestRenderedRoutingKeepsVersionConsistency(t *testing.T) {
	for name, tl := range timelines() {
		t.Run(name, func(t *testing.T) {
			for seed := range uint64(20) {
				if n, first := run(t, seed, tl, 300, nil); n != 0 {
					t.Fatalf("seed %d: %d violations; first: %s", seed, n, first)
				}
			}
		})
	}
}

// The same run sees violations when the rendering does not pin: NAIVE's
// own rendering (no header routes while it runs), and a CV rendering with
// its header routes removed (routing that ignores x-version). So the test
// above can fail.
func TestOracleSeesViolationsWithoutPins(t *testing.T) {
	naive := pb.Strategy_STRATEGY_NAIVE
	tl := []step{
		{"before", state("v1", nil), "v1"},
		{"preparing", state("v1", upd(naive, pb.Phase_PHASE_PREPARING, false)), "v1"},
		{"switched", state("v2", upd(naive, pb.Phase_PHASE_SWITCHED, false)), "v2"},
		{"done", state("v2", nil), "v2"},
	}
	if n, _ := run(t, 1, tl, 300, nil); n == 0 {
		t.Error("NAIVE: no violation seen")
	}
	m, err := istio.Render(tl[2].in)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.VirtualService.Spec.Http) != 1 || m.Routing.Pinned {
		t.Errorf("NAIVE switched renders %d routes (pinned %v), want the default only", len(m.VirtualService.Spec.Http), m.Routing.Pinned)
	}
	ignore := func(vs *networkingv1alpha3.VirtualService) {
		vs.Http = slices.DeleteFunc(vs.Http, func(r *networkingv1alpha3.HTTPRoute) bool { return len(r.Match) > 0 })
	}
	if n, _ := run(t, 1, timelines()["cv"], 300, ignore); n == 0 {
		t.Error("CV without header routes: no violation seen")
	}
}

// Plan, per strategy and phase: where first calls go, whether calls
// stamped with a version keep it, whether the coordinator holds them.
func TestPlanPerPhase(t *testing.T) {
	cv, wf, bf, naive := pb.Strategy_STRATEGY_CV, pb.Strategy_STRATEGY_WF, pb.Strategy_STRATEGY_BF, pb.Strategy_STRATEGY_NAIVE
	for _, c := range []struct {
		name         string
		in           istio.Input
		def          string
		pinned, held bool
	}{
		{"none", state("v1", nil), "v1", true, false},
		{"cv preparing", state("v1", upd(cv, pb.Phase_PHASE_PREPARING, false)), "v1", true, false},
		{"cv draining", state("v2", upd(cv, pb.Phase_PHASE_DRAINING, false)), "v2", true, false},
		{"cv draining, catalog not switched yet", state("v1", upd(cv, pb.Phase_PHASE_DRAINING, false)), "v2", true, false},
		{"cv switched", state("v2", upd(cv, pb.Phase_PHASE_SWITCHED, false)), "v2", true, false},
		{"cv rolling back", state("v1", upd(cv, pb.Phase_PHASE_ABORTED, true)), "v1", true, false},
		{"wf waiting", state("v1", upd(wf, pb.Phase_PHASE_WAITING, false)), "v1", true, false},
		{"wf switched", state("v2", upd(wf, pb.Phase_PHASE_SWITCHED, false)), "v2", true, false},
		{"bf waiting", state("v1", upd(bf, pb.Phase_PHASE_WAITING, false)), "v1", true, true},
		{"bf switched", state("v2", upd(bf, pb.Phase_PHASE_SWITCHED, false)), "v2", true, false},
		{"naive preparing", state("v1", upd(naive, pb.Phase_PHASE_PREPARING, false)), "v1", false, false},
		{"naive switched", state("v2", upd(naive, pb.Phase_PHASE_SWITCHED, false)), "v2", false, false},
	} {
		r, err := istio.Plan(c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if r.Default != c.def || r.Pinned != c.pinned || r.Held != c.held || !slices.Equal(r.Versions, []string{"v1", "v2"}) {
			t.Errorf("%s: %+v, want default %s pinned %v held %v", c.name, r, c.def, c.pinned, c.held)
		}
	}
	for _, in := range []istio.Input{
		{Service: svc},  // no default version
		{Default: "v1"}, // no service
		state("v1", &istio.Update{Strategy: pb.Strategy_STRATEGY_CV}),   // no versions in the update
		{Service: svc, Default: "v1", Versions: []string{"v.1", "v-1"}}, // one subset name for two versions
		{Service: svc, Default: "---"},                                  // no subset name
	} {
		if _, err := istio.Render(in); err == nil {
			t.Errorf("%+v renders", in)
		}
	}
}

func TestHeaderAndSubsetNames(t *testing.T) {
	if v := istio.HeaderValue("auth-service", "v1"); v != "auth-service-v1" {
		t.Errorf("header value %s", v)
	}
	for _, c := range []struct {
		value, want string
		ok          bool
	}{{"auth-service-v1", "v1", true}, {"auth-service-v1-2", "v1-2", true}, {"db-v1", "", false}, {"auth-service-", "", false}, {"", "", false}} {
		if v, ok := istio.ParseHeader("auth-service", c.value); v != c.want || ok != c.ok {
			t.Errorf("ParseHeader(%q) = %q %v", c.value, v, ok)
		}
	}
	for v, want := range map[string]string{"v1": "v1", "V2": "v2", "1.2.3": "1-2-3", "v1_beta": "v1-beta"} {
		if got, err := istio.SubsetName(v); err != nil || got != want {
			t.Errorf("SubsetName(%q) = %q, %v", v, got, err)
		}
	}
}
