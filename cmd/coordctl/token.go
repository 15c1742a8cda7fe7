package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func init() { registerCommand(newTokenCmd) }

// tokenJSON is `coordctl token create -o json`.
type tokenJSON struct {
	Name   string `json:"name"`
	Role   string `json:"role"`
	Token  string `json:"token"`
	SHA256 string `json:"sha256"`
}

func newTokenCmd(c *cli) *cobra.Command {
	tok := &cobra.Command{
		Use:   "token",
		Short: "Make admin bearer tokens for coordinatord's --token-file",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var name, role string
	create := &cobra.Command{
		Use:   "create --name NAME --role viewer|operator",
		Short: "Print a new random token and the token file entry to add for it",
		Long: `Print a new random admin bearer token (32 random bytes, base64url) and the
entry to add to coordinatord's --token-file for it: the token's name, its
role, and the SHA-256 of the token. The file never holds the token itself,
and coordctl does not keep it: hand it to its owner now, who passes it as
--token or $` + tokenEnv + `. coordinatord takes up the changed file within
a second; removing the entry revokes the token and its browser sessions.

viewer: reads, watches, dry runs, the cluster view.
operator: also starts and aborts updates and ends self-preservation.

It does not contact the coordinator.`,
		Example: `  coordctl token create --name ci-deploy --role operator
  coordctl token create --name grafana --role viewer -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			name = strings.TrimSpace(name)
			if name == "" || strings.ContainsAny(name, ":\n\"'#") {
				return usageErrorf("--name must be a plain name (no quotes, colons or #), got %q", name)
			}
			role = strings.ToLower(strings.TrimSpace(role))
			if role != "viewer" && role != "operator" {
				return usageErrorf("--role must be viewer or operator, got %q", role)
			}
			b := make([]byte, 32)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			t := base64.RawURLEncoding.EncodeToString(b)
			h := sha256.Sum256([]byte(t))
			sum := hex.EncodeToString(h[:])
			if c.opts.output == outputJSON {
				enc := json.NewEncoder(c.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(tokenJSON{Name: name, Role: role, Token: t, SHA256: sum})
			}
			_, err := fmt.Fprintf(c.stdout, `Token for %s (shown once; pass it as --token or $%s):

  %s

Add to the token file (under tokens:):

- name: %s
  role: %s
  sha256: %s
`, name, tokenEnv, t, name, role, sum)
			return err
		},
	}
	create.Flags().StringVar(&name, "name", "", "who or what the token is for (unique in the file; audit lines name it)")
	create.Flags().StringVar(&role, "role", "", "viewer or operator")
	tok.AddCommand(create)
	return tok
}
