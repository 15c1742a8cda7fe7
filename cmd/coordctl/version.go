package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coordinator/coordinator/internal/buildinfo"
)

func init() { registerCommand(newVersionCmd) }

// versionJSON is `coordctl version -o json`.
type versionJSON struct {
	Module    string `json:"module"`
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Modified  bool   `json:"modified"`
	Time      string `json:"time,omitempty"`
	GoVersion string `json:"go_version"`
}

func newVersionCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and commit of this coordctl build",
		Long: `Print the main module's version and the VCS commit this coordctl was built
from, as the Go toolchain recorded them (go build in a git checkout records
the commit; "(devel)" and "commit unknown" mean it recorded none). It does
not contact the coordinator: coordinatord --version prints the daemon's.`,
		Example: `  coordctl version
  coordctl version -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			i := buildinfo.Read()
			if c.opts.output == outputJSON {
				enc := json.NewEncoder(c.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(versionJSON{Module: i.Module, Version: i.Version, Commit: i.Commit,
					Modified: i.Modified, Time: i.Time, GoVersion: i.GoVersion})
			}
			_, err := fmt.Fprintf(c.stdout, "coordctl %s\n", i)
			return err
		},
	}
}
