package server

import (
	"os"
	"testing"
)

func TestGCPercent(t *testing.T) {
	t.Setenv("GOGC", "") // restored when the test ends
	for _, tc := range []struct {
		env   string
		unset bool
		want  int
	}{
		{unset: true, want: DefaultGCPercent},
		{env: "", want: DefaultGCPercent},
		{env: "250", want: 250},
		{env: "off", want: -1},
		{env: "-5", want: -1},
		{env: "0", want: 0},
		{env: "lots", want: 100},
	} {
		if tc.unset {
			os.Unsetenv("GOGC")
		} else {
			os.Setenv("GOGC", tc.env)
		}
		if got := GCPercent(); got != tc.want {
			t.Errorf("GOGC=%q (unset %v): GCPercent() = %d, want %d", tc.env, tc.unset, got, tc.want)
		}
	}
}
