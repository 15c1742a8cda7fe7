package main

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/client/pkg/v3/types"

	"github.com/coordinator/coordinator/coordinator/server"
)

// clusterFlags are the flags of the embedded etcd as a member of a
// cluster (DESIGN.md §6): three coordinatord given the same
// --initial-cluster and each its own --name, --peer-addr and --data-dir
// form a three-member etcd cluster.
type clusterFlags struct {
	name, initialCluster, state, peerAddr, clientAddr string
}

// registerClusterFlags defines the cluster flags on fs.
func registerClusterFlags(fs *pflag.FlagSet) *clusterFlags {
	c := &clusterFlags{}
	fs.StringVar(&c.name, "name", "", "embedded etcd member name; with --initial-cluster, this member's entry there")
	fs.StringVar(&c.initialCluster, "initial-cluster", "",
		"embedded etcd cluster: every member's name and peer URL, n1=http://127.0.0.1:2380,n2=...,n3=... (only read on first start; a restart on the same --data-dir rejoins)")
	fs.StringVar(&c.state, "initial-cluster-state", "new",
		`"new" to form the cluster, "existing" to join a running cluster that added this member (etcdctl member add)`)
	fs.StringVar(&c.peerAddr, "peer-addr", "", "embedded etcd peer listen address host:port (default: this member's entry in --initial-cluster; 127.0.0.1:0 without)")
	fs.StringVar(&c.clientAddr, "etcd-client-addr", "", "embedded etcd client listen address host:port (default 127.0.0.1:0, a free port)")
	return c
}

// validate checks the cluster flags against each other and --etcd-endpoints
// (externalEtcd), with errors that name the flags.
func (c *clusterFlags) validate(externalEtcd bool) error {
	if externalEtcd {
		if c.initialCluster != "" {
			return errors.New("--initial-cluster (embedded etcd cluster) and --etcd-endpoints (external etcd) cannot be used together")
		}
		for _, f := range [][2]string{{"--name", c.name}, {"--peer-addr", c.peerAddr}, {"--etcd-client-addr", c.clientAddr}} {
			if f[1] != "" {
				return fmt.Errorf("%s configures the embedded etcd and cannot be used with --etcd-endpoints", f[0])
			}
		}
	}
	if c.state != "new" && c.state != "existing" {
		return fmt.Errorf("--initial-cluster-state must be new or existing, not %q", c.state)
	}
	for _, f := range [][2]string{{"--peer-addr", c.peerAddr}, {"--etcd-client-addr", c.clientAddr}} {
		if f[1] == "" {
			continue
		}
		if host, _, err := net.SplitHostPort(f[1]); err != nil || host == "" {
			return fmt.Errorf("%s %q: want host:port", f[0], f[1])
		}
	}
	if c.initialCluster == "" {
		if c.state != "new" {
			return errors.New("--initial-cluster-state existing needs --initial-cluster")
		}
		return nil
	}

	members, err := types.NewURLsMap(c.initialCluster)
	if err != nil {
		return fmt.Errorf("--initial-cluster %q: %w", c.initialCluster, err)
	}
	names := slices.Sorted(maps.Keys(members))
	for _, n := range names {
		for _, u := range members[n] {
			if u.Scheme != "http" || u.Port() == "" || u.Port() == "0" {
				return fmt.Errorf("--initial-cluster: member %s: %q: want http://host:port with a fixed port", n, u.String())
			}
		}
	}
	if c.name == "" {
		return fmt.Errorf("--initial-cluster needs --name, one of %s", strings.Join(names, ", "))
	}
	self, ok := members[c.name]
	if !ok {
		return fmt.Errorf("--name %q is not in --initial-cluster (members: %s)", c.name, strings.Join(names, ", "))
	}
	if c.peerAddr != "" && !slices.ContainsFunc(self, func(u url.URL) bool { return u.Host == c.peerAddr }) {
		return fmt.Errorf("--peer-addr %s does not match %s's entry in --initial-cluster (%s)", c.peerAddr, c.name, self.String())
	}
	return nil
}

// apply copies the cluster flags into cfg.
func (c *clusterFlags) apply(cfg *server.Config) {
	cfg.Name, cfg.InitialCluster, cfg.PeerAddr, cfg.EtcdClientAddr = c.name, c.initialCluster, c.peerAddr, c.clientAddr
	if c.initialCluster != "" {
		cfg.ClusterState = c.state
	}
}
