package main

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/coordinator/coordinator/coordinator/server"
)

const threeMembers = "n1=http://127.0.0.1:12380,n2=http://127.0.0.1:22380,n3=http://127.0.0.1:32380"

func TestClusterFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--initial-cluster", threeMembers, "--etcd-endpoints", "http://10.0.0.1:2379"},
			"--initial-cluster (embedded etcd cluster) and --etcd-endpoints (external etcd) cannot be used together"},
		{[]string{"--name", "n1", "--etcd-endpoints", "http://10.0.0.1:2379"},
			"--name configures the embedded etcd and cannot be used with --etcd-endpoints"},
		{[]string{"--etcd-client-addr", "127.0.0.1:2379", "--etcd-endpoints", "http://10.0.0.1:2379"},
			"--etcd-client-addr configures the embedded etcd"},
		{[]string{"--initial-cluster", threeMembers},
			"--initial-cluster needs --name, one of n1, n2, n3"},
		{[]string{"--initial-cluster", threeMembers, "--name", "n4"},
			`--name "n4" is not in --initial-cluster (members: n1, n2, n3)`},
		{[]string{"--initial-cluster", threeMembers, "--name", "n2", "--peer-addr", "127.0.0.1:12380"},
			"--peer-addr 127.0.0.1:12380 does not match n2's entry in --initial-cluster (http://127.0.0.1:22380)"},
		{[]string{"--initial-cluster", "n1=http://127.0.0.1:0", "--name", "n1"},
			"want http://host:port with a fixed port"},
		{[]string{"--initial-cluster", "n1=https://127.0.0.1:2380", "--name", "n1"},
			"want http://host:port"},
		{[]string{"--initial-cluster", "n1", "--name", "n1"}, "--initial-cluster \"n1\":"},
		{[]string{"--initial-cluster", threeMembers, "--name", "n1", "--initial-cluster-state", "old"},
			`--initial-cluster-state must be new or existing, not "old"`},
		{[]string{"--initial-cluster-state", "existing"}, "--initial-cluster-state existing needs --initial-cluster"},
		{[]string{"--peer-addr", "12380"}, `--peer-addr "12380": want host:port`},
	} {
		var stderr bytes.Buffer
		code := run(tc.args, io.Discard, &stderr)
		if code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", tc.args, code, stderr.String())
		}
		if got := stderr.String(); !strings.HasPrefix(got, "coordinatord: ") || !strings.Contains(got, tc.want) {
			t.Errorf("%q: stderr %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestClusterFlagsApply(t *testing.T) {
	for _, tc := range []struct {
		c    clusterFlags
		want server.Config
	}{
		{clusterFlags{state: "new"}, server.Config{}},
		{clusterFlags{state: "new", name: "solo", clientAddr: "127.0.0.1:2379"}, server.Config{Name: "solo", EtcdClientAddr: "127.0.0.1:2379"}},
		{clusterFlags{state: "new", name: "n2", initialCluster: threeMembers},
			server.Config{Name: "n2", InitialCluster: threeMembers, ClusterState: "new"}},
		{clusterFlags{state: "existing", name: "n3", initialCluster: threeMembers, peerAddr: "127.0.0.1:32380", clientAddr: "127.0.0.1:32379"},
			server.Config{Name: "n3", InitialCluster: threeMembers, PeerAddr: "127.0.0.1:32380", EtcdClientAddr: "127.0.0.1:32379", ClusterState: "existing"}},
	} {
		if err := tc.c.validate(false); err != nil {
			t.Errorf("%+v: %v", tc.c, err)
			continue
		}
		var got server.Config
		tc.c.apply(&got)
		if got.Name != tc.want.Name || got.InitialCluster != tc.want.InitialCluster || got.PeerAddr != tc.want.PeerAddr ||
			got.EtcdClientAddr != tc.want.EtcdClientAddr || got.ClusterState != tc.want.ClusterState {
			t.Errorf("%+v applied: %+v, want %+v", tc.c, got, tc.want)
		}
	}
}
