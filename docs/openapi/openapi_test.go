package openapi

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// The merged document is valid JSON in which every $ref names a
// definition it has; merging a path or definition the generated document
// already has is refused rather than one silently replacing the other.
func TestMerge(t *testing.T) {
	var doc struct {
		Paths       map[string]any `json:"paths"`
		Definitions map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(JSON, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Paths["/v1/session"] == nil || doc.Paths["/v1/services"] == nil || doc.Definitions["Caller"] == nil {
		t.Fatalf("merged document lacks /v1/session, /v1/services or Caller")
	}
	if !bytes.Contains(JSON, []byte(`Bearer <token>`)) {
		t.Error(`the merged document escapes "Bearer <token>"`)
	}
	refs := 0
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "$ref" {
					refs++
					if name, ok := strings.CutPrefix(s, "#/definitions/"); !ok || doc.Definitions[name] == nil {
						t.Errorf("$ref %q resolves to nothing", s)
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	var all any
	_ = json.Unmarshal(JSON, &all)
	walk(all)
	if refs < 20 {
		t.Errorf("%d $refs found; the walk missed some", refs)
	}

	for _, dup := range []string{
		`{"paths": {"/v1/graph": {}}}`,
		`{"definitions": {"Session": {}}}`,
	} {
		if _, err := merge(Generated, []byte(dup)); err == nil || !strings.Contains(err.Error(), "is in both documents") {
			t.Errorf("merge of %s: %v, want a refusal", dup, err)
		}
	}
	if _, err := merge(Generated, []byte(`{"path": {}}`)); err == nil {
		t.Error("a misspelt key in session.swagger.json is accepted")
	}
}
