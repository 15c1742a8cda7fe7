package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/coordinator/coordinator/coordinator/server/servertest"
	pb "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// The REST paths FuzzRESTDecode posts to: an unknown service, a service
// with only its current version registered (so no update can start and
// every input meets the same state), and the abort of an unknown update.
var fuzzRESTPaths = []string{"/v1/services/nosuch/updates", "/v1/services/a/updates", "/v1/updates/nosuch:abort"}

// FuzzRESTDecode posts fuzz bodies through the real REST gateway (strict
// JSON decoding, strategy names, the body limit) to a real coordinator:
// it must never panic nor answer 5xx, and every refusal comes in the
// gateway's error shape with a message.
func FuzzRESTDecode(f *testing.F) {
	ts := servertest.Start(f, "")
	ts.Register(&pb.Register{InstanceId: "a-1", Service: "a", Version: "v1",
		HeartbeatInterval: durationpb.New(10 * time.Minute), AllowedMisses: 10}) // outlives a fuzz run without heartbeats
	for _, body := range []string{
		``,
		`{}`,
		`null`,
		`[]`,
		`{"toVersion":"v2","strategy":"cv"}`,
		`{"toVersion":"v2","strategy":"CV","timeout":"5s"}`,
		`{"toVersion":"v1","strategy":"STRATEGY_BF","maxBlock":"1s"}`,
		`{"toVersion":"v9","strategy":"wf","timeout":"-5s"}`,
		`{"toVersion":"v2","strategy":"cv","timout":"5s"}`,
		`{"toVersion":"v2","strategy":"blue-green"}`,
		`{"toVersion":"v2","strategy":3}`,
		`{"toVersion":"v2","strategy":-1}`,
		`{"toVersion":"v2","strategy":{"strategy":"cv"}}`,
		`{"toVersion":"v2","strategy":"cv","strategy":"bf"}`,
		`{"toVersion":["v2"],"strategy":null}`,
		`{"toVersion":"v2","timeout":"99999999999999999s"}`,
		`{"toVersion":"\u0000","strategy":"\ud800"}`,
		`{"reason":"operator said so"}`,
		`{"toVersion":`,
		`{"a":[[[[[[[[[[{"strategy":"cv"}]]]]]]]]]]}`,
	} {
		for i := range fuzzRESTPaths {
			f.Add(uint8(i), []byte(body))
		}
	}
	client := &http.Client{Timeout: 10 * time.Second}
	f.Fuzz(func(t *testing.T, path uint8, body []byte) {
		url := "http://" + ts.HTTPAddr() + fuzzRESTPaths[int(path)%len(fuzzRESTPaths)]
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode >= 500 {
			t.Fatalf("POST %s %q: HTTP %d %s", url, body, resp.StatusCode, out)
		}
		if resp.StatusCode < 400 {
			// Nothing these paths are sent can succeed: no update can start
			// (a has no other version) and there is no update to abort.
			t.Fatalf("POST %s %q: HTTP %d %s, want a refusal", url, body, resp.StatusCode, out)
		}
		var e struct {
			Code    int
			Message string
		}
		if err := json.Unmarshal(out, &e); err != nil || e.Code == 0 || strings.TrimSpace(e.Message) == "" {
			t.Fatalf("POST %s %q: HTTP %d %s: not the gateway's error shape with a message (%v)", url, body, resp.StatusCode, out, err)
		}
	})
}
