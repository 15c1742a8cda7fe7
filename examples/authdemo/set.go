package main

import (
	"fmt"
	"net/http"

	"github.com/coordinator/coordinator/sidecar"
)

// The set demo (--set, DESIGN.md §4.8): Portal and Proc are updated
// together, as one update. Portal v2 sends Proc a new request field
// (locale) that Proc v2 requires: Portal v1 calling Proc v2 fails, with no
// fault anywhere, and Portal v2 calling Proc v1 runs a mixed pair the
// checker counts. The load enters at Web, which calls Portal through its
// sidecar, so that which Portal a transaction runs on is the coordinator's
// to decide.

// setServices are the services the set demo updates together.
var setServices = []string{"portal", "proc"}

// webHandler is the entry: it has Portal handle the request.
func webHandler(s *service, w http.ResponseWriter, r *http.Request) {
	if _, err := s.get(r, "http://portal/"); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	sidecar.Done(r.Context(), "portal") // Web calls Portal once
	fmt.Fprint(w, "ok")
}

// portalV2Handler is Portal v2: as v1, and it sends Proc the locale.
func portalV2Handler(s *service, w http.ResponseWriter, r *http.Request) {
	portalSends(s, w, r, "&locale=en")
}

// procV2Handler is Proc v2: it needs the locale Portal v2 sends.
func procV2Handler(s *service, w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("locale") == "" {
		http.Error(w, "proc v2: request without locale (sent by portal v1?)", http.StatusBadRequest)
		return
	}
	procHandler(s, w, r)
}

// mixedSet reports whether m (service -> version a transaction ran on)
// holds two services of the set at different versions.
func mixedSet(m map[string]string) bool {
	first := ""
	for _, svc := range setServices {
		v, ok := m[svc]
		switch {
		case !ok:
		case first == "":
			first = v
		case v != first:
			return true
		}
	}
	return false
}
