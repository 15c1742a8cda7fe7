package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.8",
		Main:      debug.Module{Path: "github.com/coordinator/coordinator", Version: "v0.0.0-20261203001902-5bb258f1e2d3+dirty"},
		Settings: []debug.BuildSetting{
			{Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "5bb258f1e2d3a0c1b9e8f7d6c5b4a39281706f5e"},
			{Key: "vcs.time", Value: "2026-12-03T00:19:02Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	i := fromBuildInfo(bi)
	want := "v0.0.0-20261203001902-5bb258f1e2d3+dirty (commit 5bb258f1e2d3a0c1b9e8f7d6c5b4a39281706f5e modified, 2026-12-03T00:19:02Z, go1.26.8)"
	if got := i.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if i.Module != "github.com/coordinator/coordinator" || !i.Modified {
		t.Errorf("%+v", i)
	}
	if got := (Info{Version: "(devel)", GoVersion: "go1.26.8"}).String(); got != "(devel) (commit unknown, go1.26.8)" {
		t.Errorf("without VCS: %q", got)
	}
}
