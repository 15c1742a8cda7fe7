package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/coordinator/coordinator/strategy"
)

// DefaultMaxRequestBytes bounds a REST request body (Config.MaxRequestBytes).
const DefaultMaxRequestBytes = 1 << 20

// restMarshaler is the REST gateway's JSON: requests are decoded strictly
// (an unknown field, a misspelt "timeout" say, is a 400 that names it, not
// silently no timeout), strategy names are taken in the forms people type
// ("cv", "CV", "STRATEGY_CV"), and answers carry every field.
func restMarshaler() runtime.Marshaler {
	return &runtime.HTTPBodyMarshaler{Marshaler: strictJSON{&runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}}}
}

// strictJSON is runtime.JSONPb whose decoding first rewrites strategy names
// to their protocol form.
type strictJSON struct{ *runtime.JSONPb }

func (m strictJSON) Unmarshal(data []byte, v any) error {
	data, err := canonicalStrategies(data)
	if err != nil {
		return err
	}
	return m.JSONPb.Unmarshal(data, v)
}

func (m strictJSON) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		data, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		return m.Unmarshal(data, v)
	})
}

// canonicalStrategies rewrites every "strategy" string of a JSON document
// that strategy.Parse reads to the enum's protocol name; anything else,
// including a name it does not read, is left for protojson to judge.
func canonicalStrategies(data []byte) ([]byte, error) {
	if !bytes.Contains(data, []byte(`"strategy"`)) {
		return data, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return data, nil // protojson reports the syntax error
	}
	changed := false
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "strategy" {
					if kind, err := strategy.Parse(s); err == nil && kind.String() != s {
						v[k], changed = kind.String(), true
					}
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	if !changed {
		return data, nil
	}
	return json.Marshal(doc)
}

// limitBody answers 413 to a request whose body is over max bytes, before
// any of it is decoded; smaller bodies are read whole (an admin request is
// small) and passed on.
func limitBody(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			tooLarge(w, max)
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			data, err := io.ReadAll(io.LimitReader(r.Body, max+1))
			r.Body.Close()
			if err != nil {
				http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
				return
			}
			if int64(len(data)) > max {
				tooLarge(w, max)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(data))
		}
		next.ServeHTTP(w, r)
	})
}

// tooLarge writes a 413 in the gateway's error shape.
func tooLarge(w http.ResponseWriter, max int64) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"code":    codes.ResourceExhausted,
		"message": fmt.Sprintf("request body over %d bytes", max),
	})
}
