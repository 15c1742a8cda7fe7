// Package buildinfo says which build of a command is running: the main
// module's version and the VCS commit it was built from, as the Go
// toolchain records them (runtime/debug.ReadBuildInfo; `go build` in a git
// checkout stamps vcs.revision, and since Go 1.24 a version derived from
// the tag or commit, such as v0.0.0-20261203001902-5bb258f1e2d3+dirty).
package buildinfo

import (
	"fmt"
	"runtime/debug"
	"strings"
)

// Info is what the build recorded; unknown fields are empty.
type Info struct {
	// Module is the main module's path; Version its version, "(devel)"
	// when the toolchain knew none (go run, go test).
	Module, Version string
	// Commit is vcs.revision, Time vcs.time; Modified is vcs.modified:
	// the work tree had uncommitted changes.
	Commit, Time string
	Modified     bool
	GoVersion    string
}

// Read reads the running binary's build information.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return Info{}
	}
	return fromBuildInfo(bi)
}

func fromBuildInfo(bi *debug.BuildInfo) Info {
	i := Info{Module: bi.Main.Path, Version: bi.Main.Version, GoVersion: bi.GoVersion}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Commit = s.Value
		case "vcs.time":
			i.Time = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	return i
}

// String is one line: the version, then the commit (with "modified" when
// the tree was), the commit's time and the Go version, e.g.
//
//	v0.0.0-20261203001902-5bb258f1e2d3 (commit 5bb258f1e2d3..., 2026-12-03T00:19:02Z, go1.26.8)
func (i Info) String() string {
	v := i.Version
	if v == "" {
		v = "(unknown)"
	}
	var parts []string
	if i.Commit != "" {
		c := "commit " + i.Commit
		if i.Modified {
			c += " modified"
		}
		parts = append(parts, c)
	} else {
		parts = append(parts, "commit unknown")
	}
	if i.Time != "" {
		parts = append(parts, i.Time)
	}
	if i.GoVersion != "" {
		parts = append(parts, i.GoVersion)
	}
	return fmt.Sprintf("%s (%s)", v, strings.Join(parts, ", "))
}
