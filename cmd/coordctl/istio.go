package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/api/httpbody"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerCommand(newIstioCmd) }

func newIstioCmd(c *cli) *cobra.Command {
	var namespace, host, output string
	cmd := &cobra.Command{
		Use:   "istio render SERVICE",
		Short: "Print the Istio manifests that enforce a service's routing now",
		Long: `For coordsidecar's --mode istio, where the proxy stamps the x-version
header and Istio (Envoy) picks endpoints. render prints the Istio
VirtualService and DestinationRule (networking.istio.io/v1) that enforce
the routing of SERVICE at this moment: one DestinationRule
subset per version (label version: VERSION), a VirtualService route per
version for requests whose x-version header names it (a transaction keeps
the version it used), then a default route to the version the coordinator
sends new transactions to at the current phase of the service's update.
Every route sets x-version on the response.

Render again, and apply, at each phase of an update (coordctl status
--watch shows them). BF holds calls until its switch: Istio cannot hold a
call, so the hold is coordsidecar's (in --mode istio it waits for the
coordinator's decision before sending a call out); the rendered default
route is the old version. See docs/istio.md.

-o yaml (the default) prints two YAML documents for kubectl apply -f -;
-o json prints a Kubernetes List.`,
		Example: `  coordctl istio render auth-service --namespace shop | kubectl apply -f -
  coordctl istio render auth-service --host auth.shop.svc.cluster.local -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 || args[0] != "render" {
				return usageErrorf("istio: want \"istio render SERVICE\" (render is the only action)")
			}
			return exactArgs("render", "SERVICE")(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			args = args[1:]
			format := strings.ToLower(output)
			if format != "yaml" && format != "json" {
				return usageErrorf("istio render: -o %q: want yaml or json", output)
			}
			req := &coordinatorv1.GetServiceIstioRequest{Service: args[0], Namespace: namespace, Host: host, Format: format}
			body, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*httpbody.HttpBody, error) {
				return cl.GetServiceIstio(ctx, req)
			})
			if err != nil {
				return err
			}
			if _, err := c.stdout.Write(body.GetData()); err != nil {
				return fmt.Errorf("writing the manifests: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&namespace, "namespace", "", "metadata.namespace of the manifests (default: none, kubectl's)")
	f.StringVar(&host, "host", "", "Kubernetes service host the rules are for (default: SERVICE)")
	// Shadows the global -o (table, wide, json): manifests are YAML or JSON.
	f.StringVarP(&output, "output", "o", "yaml", "output format: yaml or json")
	return cmd
}
