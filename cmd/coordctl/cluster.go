package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerCommand(newClusterCmd) }

func newClusterCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "cluster",
		Short: "Show the replicas, which one leads, and the etcd members",
		Long: `Show the coordinator replicas in campaign order (the first one leads: it owns
the graph, the sidecar streams and the updates), and the etcd members with
their health: whether a status request succeeded without error, which one is
the raft leader (not the coordinator leader), the database size and the raft
index. Any replica answers.`,
		Example: `  coordctl cluster
  coordctl cluster -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := callAdmin(c, cmd, func(ctx context.Context, a coordinatorv1.AdminServiceClient) (*coordinatorv1.Cluster, error) {
				return a.GetCluster(ctx, &coordinatorv1.GetClusterRequest{})
			})
			if err != nil {
				return err
			}
			return c.print(cl, func(w io.Writer) error { return renderCluster(w, cl) })
		},
	}
}

// renderCluster writes the leader, the replicas and the etcd members.
func renderCluster(w io.Writer, cl *coordinatorv1.Cluster) error {
	leader := "none (no replica campaigns)"
	if l := cl.GetLeader(); l != nil {
		leader = fmt.Sprintf("%s (gRPC %s, HTTP %s)", cell(l.GetName()), cell(l.GetGrpcAddress()), cell(l.GetHttpAddress()))
	}
	fmt.Fprintf(w, "Leader:       %s\n", leader)
	fmt.Fprintf(w, "Answered by:  %s\n", cell(cl.GetAnsweredBy()))

	if len(cl.GetReplicas()) > 0 {
		fmt.Fprintln(w)
		t := newTable(w, "REPLICA", "GRPC", "HTTP", "LEADER")
		for _, r := range cl.GetReplicas() {
			t.row(r.GetName(), r.GetGrpcAddress(), r.GetHttpAddress(), yesNo(r.GetLeader()))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}

	fmt.Fprintln(w)
	if len(cl.GetMembers()) == 0 {
		_, err := fmt.Fprintln(w, "No etcd members.")
		return err
	}
	t := newTable(w, "MEMBER", "ID", "CLIENT URLS", "HEALTHY", "RAFT LEADER", "DB SIZE", "RAFT INDEX", "ERROR")
	for _, m := range cl.GetMembers() {
		name := m.GetName()
		if m.GetLearner() {
			name = strings.TrimSpace(name + " (learner)")
		}
		var index string
		if m.GetRaftIndex() > 0 {
			index = strconv.FormatUint(m.GetRaftIndex(), 10)
		}
		t.row(
			name,
			fmt.Sprintf("%x", m.GetId()),
			strings.Join(m.GetClientUrls(), ","),
			yesNo(m.GetHealthy()),
			yesNo(m.GetRaftLeader()),
			formatBytes(m.GetDbSizeBytes()),
			index,
			m.GetError(),
		)
	}
	return t.flush()
}

// formatBytes renders a size in bytes with binary units ("20 KiB",
// "1.5 MiB"), or "" when it is not positive (unknown).
func formatBytes(n int64) string {
	if n <= 0 {
		return ""
	}
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, exp := float64(n)/unit, 0
	for v >= unit && exp < 4 {
		v /= unit
		exp++
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + []string{"KiB", "MiB", "GiB", "TiB", "PiB"}[exp]
}
