package storage

import (
	"errors"
	"strings"
	"testing"
)

func TestKeysLayout(t *testing.T) {
	for _, k := range []Keys{{}, {Prefix: "/coordinator/v1"}, {Prefix: DefaultPrefix}} {
		got := map[string]string{
			k.Services():                        "/coordinator/v1/services/",
			k.Service("auth"):                   "/coordinator/v1/services/auth",
			k.Sessions():                        "/coordinator/v1/sessions/",
			k.Session("i-1"):                    "/coordinator/v1/sessions/i-1",
			k.Txns():                            "/coordinator/v1/txns/",
			k.Txn("4bf92f35"):                   "/coordinator/v1/txns/4bf92f35",
			k.Routes():                          "/coordinator/v1/routes/",
			k.Route("auth"):                     "/coordinator/v1/routes/auth",
			k.Updates():                         "/coordinator/v1/updates/",
			k.Update("u1"):                      "/coordinator/v1/updates/u1",
			k.Pins():                            "/coordinator/v1/pins/",
			k.ServicePins("auth"):               "/coordinator/v1/pins/auth/",
			k.Pin("auth", "4bf92f35"):           "/coordinator/v1/pins/auth/4bf92f35",
			k.SelfPreservation():                "/coordinator/v1/selfpreservation",
			k.Analyses():                        "/coordinator/v1/analysis/",
			k.Analysis("u1"):                    "/coordinator/v1/analysis/u1",
			k.Election():                        "/coordinator/v1/election",
			k.Quarantine():                      "/coordinator/v1/quarantine/",
			k.Quarantined(k.Update("u1")):       "/coordinator/v1/quarantine/updates/u1",
			k.Quarantined(k.SelfPreservation()): "/coordinator/v1/quarantine/selfpreservation",
		}
		for have, want := range got {
			if have != want {
				t.Errorf("Keys{%q}: got %q, want %q", k.Prefix, have, want)
			}
		}
	}
	// Every family is disjoint from the others and inside the root.
	k := Keys{Prefix: "/x/"}
	fams := []string{k.Services(), k.Sessions(), k.Txns(), k.Routes(), k.Updates(), k.Pins(), k.SelfPreservation(), k.Analyses(), k.Election() + "/", k.Quarantine()}
	for i, a := range fams {
		if !strings.HasPrefix(a, k.Root()) {
			t.Errorf("%q outside root %q", a, k.Root())
		}
		for j, b := range fams {
			if i != j && strings.HasPrefix(a, b) {
				t.Errorf("%q is inside %q", a, b)
			}
		}
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"auth-service", "a", "4bf92f3577b34da6a3ce929d0e0e4736", "v1.2.3_x:y", "服务", strings.Repeat("a", MaxNameLen)} {
		if err := ValidName("service", ok); err != nil {
			t.Errorf("ValidName(%q) = %v, want nil", ok, err)
		}
	}
	for _, tc := range []struct{ name, want string }{
		{"", "empty"},
		{"a/b", "'/'"},
		{"a b", "U+0020"},
		{"a\x00b", "U+0000"},
		{"a\nb", "U+000A"},
		{"\xff", "UTF-8"},
		{strings.Repeat("a", MaxNameLen+1), "more than"},
	} {
		err := ValidName("instance", tc.name)
		if !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "instance") {
			t.Errorf("ValidName(%q) = %v, want ErrInvalidName saying %q", tc.name, err, tc.want)
		}
	}
}
