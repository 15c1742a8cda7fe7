package kubernetes

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// object is one YAML document of a manifest, decoded.
type object struct {
	file string
	doc  int // 1-based, in its file
	meta metav1.TypeMeta
	obj  any // *appsv1.StatefulSet, *corev1.Service, ...
}

func (o object) String() string { return fmt.Sprintf("%s#%d (%s)", o.file, o.doc, o.meta.Kind) }

// newObject is the k8s.io/api type of each apiVersion and kind the
// manifests may hold; anything else is an error.
func newObject(tm metav1.TypeMeta) (any, bool) {
	switch tm.APIVersion + "/" + tm.Kind {
	case "v1/Service":
		return &corev1.Service{}, true
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}, true
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, true
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	}
	return nil, false
}

// manifestFiles are the YAML files of this directory but kustomization.yaml.
func manifestFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = slices.DeleteFunc(files, func(f string) bool { return f == "kustomization.yaml" })
	if len(files) == 0 {
		t.Fatal("no manifests")
	}
	return files
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// loadManifests decodes every document of every manifest strictly: an
// unknown or misspelt field, a duplicate field or a value of the wrong
// type fails, as does a kind the manifests are not expected to hold.
func loadManifests(t *testing.T) []object {
	t.Helper()
	var objs []object
	for _, f := range manifestFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range docSeparator.Split(string(b), -1) {
			if isBlank(doc) {
				continue
			}
			o := object{file: f, doc: i + 1}
			if err := yaml.Unmarshal([]byte(doc), &o.meta); err != nil {
				t.Fatalf("%s: %v", o, err)
			}
			var ok bool
			if o.obj, ok = newObject(o.meta); !ok {
				t.Fatalf("%s: unexpected apiVersion %q kind %q", o, o.meta.APIVersion, o.meta.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), o.obj); err != nil {
				t.Fatalf("%s: strict decoding into %T: %v", o, o.obj, err)
			}
			objs = append(objs, o)
		}
	}
	return objs
}

// isBlank reports whether a document has only comments and blank lines.
func isBlank(doc string) bool {
	for l := range strings.Lines(doc) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// all returns the objects of type T.
func all[T any](objs []object) []T {
	var out []T
	for _, o := range objs {
		if x, ok := o.obj.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

// only returns the single object of type T, failing unless there is one.
func only[T any](t *testing.T, objs []object) T {
	t.Helper()
	xs := all[T](objs)
	if len(xs) != 1 {
		var zero T
		t.Fatalf("%d objects of type %T, want 1", len(xs), zero)
	}
	return xs[0]
}

// container returns the container named name of spec.
func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

// flags parses "--flag=value" arguments (every argument must be one) into
// a map; a flag given twice fails.
func flags(t *testing.T, args []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || !strings.HasPrefix(k, "--") {
			t.Fatalf("argument %q: want --flag=value", a)
		}
		if _, dup := m[k]; dup {
			t.Fatalf("flag %s given twice", k)
		}
		m[k] = v
	}
	return m
}
