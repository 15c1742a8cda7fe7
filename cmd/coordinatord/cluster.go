package main

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"go.etcd.io/etcd/client/pkg/v3/types"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/security/tlsfiles"
)

// clusterFlags are the flags of the embedded etcd as a member of a
// cluster (DESIGN.md §6): three coordinatord given the same
// --initial-cluster and each its own --name, --peer-addr and --data-dir
// form a three-member etcd cluster. With --peer-cert, --peer-key and
// --peer-ca its members talk Raft over mutual TLS (https:// peer URLs),
// and its client listeners require client certificates too. They also
// hold how this replica reaches an external etcd securely (--etcd-cacert,
// --etcd-cert, --etcd-key, --etcd-username, --etcd-password[-file]).
type clusterFlags struct {
	name, initialCluster, state, peerAddr, clientAddr string
	// What the embedded etcd's listeners bind when that is not what they
	// advertise (peerAddr, clientAddr): 0.0.0.0 in a pod named by DNS.
	peerListenAddr, clientListenAddr string
	// The addresses other replicas send sidecars and operators to.
	advertiseGRPC, advertiseHTTP string

	peerTLS, clientTLS tlsfiles.Files // embedded etcd
	// external etcd
	etcdTLS                tlsfiles.Files
	etcdUser, etcdPassword string
	etcdPasswordFile       string
	passwordFromFile       bool // validate read etcdPassword from etcdPasswordFile
}

// registerClusterFlags defines the cluster flags on fs.
func registerClusterFlags(fs *pflag.FlagSet) *clusterFlags {
	c := &clusterFlags{}
	fs.StringVar(&c.name, "name", "", "embedded etcd member name; with --initial-cluster, this member's entry there")
	fs.StringVar(&c.initialCluster, "initial-cluster", "",
		"embedded etcd cluster: every member's name and peer URL, n1=http://127.0.0.1:2380,n2=...,n3=... (https:// with --peer-cert; only read on first start; a restart on the same --data-dir rejoins)")
	fs.StringVar(&c.state, "initial-cluster-state", "new",
		`"new" to form the cluster, "existing" to join a running cluster that added this member (etcdctl member add)`)
	fs.StringVar(&c.peerAddr, "peer-addr", "", "embedded etcd peer address host:port, listened on and advertised (default: this member's entry in --initial-cluster; 127.0.0.1:0 without)")
	fs.StringVar(&c.peerListenAddr, "peer-listen-addr", "",
		"embedded etcd peer listen address host:port when it differs from the advertised one (this member's entry in --initial-cluster), "+
			"e.g. 0.0.0.0:2380 in a pod whose peer URL names its DNS name; needs --initial-cluster (default: the advertised address)")
	fs.StringVar(&c.advertiseGRPC, "advertise-grpc", "",
		"gRPC address other replicas send sidecars and operators to, host:port (default --grpc-addr; set it when that binds 0.0.0.0, and name it in the replica's certificate)")
	fs.StringVar(&c.advertiseHTTP, "advertise-http", "",
		"HTTP address other replicas show operators in the cluster view, host:port (default --http-addr)")
	fs.StringVar(&c.clientAddr, "etcd-client-addr", "",
		"embedded etcd client address host:port, listened on and advertised to the other members and this replica's etcd client (default with --initial-cluster: 127.0.0.1:0, a free port; a single member opens no client listener unless this is set: this replica calls it in process)")
	fs.StringVar(&c.clientListenAddr, "etcd-client-listen-addr", "",
		"embedded etcd client listen address host:port when it differs from --etcd-client-addr (then only advertised, with a fixed port), e.g. 0.0.0.0:2379 in a pod (default: --etcd-client-addr)")

	fs.StringVar(&c.peerTLS.Cert, "peer-cert", "",
		"embedded etcd: PEM certificate this member presents to its peers, as server and client (needs --peer-key and --peer-ca; --initial-cluster URLs are then https://)")
	fs.StringVar(&c.peerTLS.Key, "peer-key", "", "embedded etcd: PEM private key of --peer-cert")
	fs.StringVar(&c.peerTLS.CA, "peer-ca", "",
		"embedded etcd: PEM CA bundle that verifies the other members' peer certificates (required and checked on every peer connection)")
	fs.StringVar(&c.clientTLS.Cert, "etcd-client-cert", "",
		"embedded etcd: PEM certificate of the member's client listener (https://; clients must present a certificate --etcd-client-ca verifies); this replica's etcd client presents it too. Default with --peer-cert: the peer files (--peer-cert, --peer-key, --peer-ca) serve the client listener as well")
	fs.StringVar(&c.clientTLS.Key, "etcd-client-key", "", "embedded etcd: PEM private key of --etcd-client-cert (default with --peer-cert: --peer-key)")
	fs.StringVar(&c.clientTLS.CA, "etcd-client-ca", "",
		"embedded etcd: PEM CA bundle that verifies client certificates on the member's client listener, and the other members' client listeners (default with --peer-cert: --peer-ca)")

	fs.StringVar(&c.etcdTLS.CA, "etcd-cacert", "", "external etcd (--etcd-endpoints): PEM CA bundle that verifies etcd's server certificates (default: the system roots for https:// endpoints)")
	fs.StringVar(&c.etcdTLS.Cert, "etcd-cert", "", "external etcd: PEM client certificate presented to etcd (needs --etcd-key)")
	fs.StringVar(&c.etcdTLS.Key, "etcd-key", "", "external etcd: PEM private key of --etcd-cert")
	fs.StringVar(&c.etcdUser, "etcd-username", "", "external etcd: user to authenticate as (etcd auth enabled; needs a password)")
	fs.StringVar(&c.etcdPassword, "etcd-password", "",
		"external etcd: password of --etcd-username; prefer the variable or --etcd-password-file, as a command line is visible to other users (env COORDINATORD_ETCD_PASSWORD)")
	fs.StringVar(&c.etcdPasswordFile, "etcd-password-file", "",
		"external etcd: file holding the password of --etcd-username (a trailing newline is ignored)")
	return c
}

// tlsTriple checks that files named by the flags cert, key and ca are all
// given or none.
func tlsTriple(f tlsfiles.Files, cert, key, ca string) error {
	if f.Empty() || (f.Cert != "" && f.Key != "" && f.CA != "") {
		return nil
	}
	var missing []string
	for _, x := range [][2]string{{cert, f.Cert}, {key, f.Key}, {ca, f.CA}} {
		if x[1] == "" {
			missing = append(missing, x[0])
		}
	}
	return fmt.Errorf("%s, %s and %s go together: missing %s", cert, key, ca, strings.Join(missing, ", "))
}

// validateSecurity checks the TLS and auth flags against each other and
// --etcd-endpoints (endpoints), and reads --etcd-password-file.
func (c *clusterFlags) validateSecurity(endpoints []string) error {
	embedded := [][2]string{
		{"--peer-cert", c.peerTLS.Cert}, {"--peer-key", c.peerTLS.Key}, {"--peer-ca", c.peerTLS.CA},
		{"--etcd-client-cert", c.clientTLS.Cert}, {"--etcd-client-key", c.clientTLS.Key}, {"--etcd-client-ca", c.clientTLS.CA},
	}
	external := [][2]string{
		{"--etcd-cacert", c.etcdTLS.CA}, {"--etcd-cert", c.etcdTLS.Cert}, {"--etcd-key", c.etcdTLS.Key},
		{"--etcd-username", c.etcdUser}, {"--etcd-password", c.etcdPassword}, {"--etcd-password-file", c.etcdPasswordFile},
	}
	if len(endpoints) > 0 {
		for _, f := range embedded {
			if f[1] != "" {
				return fmt.Errorf("%s configures the embedded etcd and cannot be used with --etcd-endpoints (use --etcd-cacert, --etcd-cert and --etcd-key)", f[0])
			}
		}
	} else {
		for _, f := range external {
			if f[1] != "" {
				return fmt.Errorf("%s is for an external etcd and needs --etcd-endpoints", f[0])
			}
		}
	}
	if err := tlsTriple(c.peerTLS, "--peer-cert", "--peer-key", "--peer-ca"); err != nil {
		return err
	}
	if err := tlsTriple(c.clientTLS, "--etcd-client-cert", "--etcd-client-key", "--etcd-client-ca"); err != nil {
		return err
	}
	if (c.etcdTLS.Cert == "") != (c.etcdTLS.Key == "") {
		if c.etcdTLS.Cert == "" {
			return errors.New("--etcd-key needs --etcd-cert")
		}
		return errors.New("--etcd-cert needs --etcd-key")
	}
	if !c.etcdTLS.Empty() {
		for _, ep := range endpoints {
			if strings.HasPrefix(ep, "http://") {
				return fmt.Errorf("--etcd-endpoints %s is plain http, but --etcd-cacert/--etcd-cert configure TLS: use https://", ep)
			}
		}
	}
	if c.etcdPasswordFile != "" && !c.passwordFromFile {
		if c.etcdPassword != "" {
			return errors.New("--etcd-password and --etcd-password-file cannot be used together")
		}
		b, err := os.ReadFile(c.etcdPasswordFile)
		if err != nil {
			return fmt.Errorf("--etcd-password-file: %w", err)
		}
		c.etcdPassword = strings.TrimRight(string(b), "\r\n")
		c.passwordFromFile = true
		if c.etcdPassword == "" {
			return fmt.Errorf("--etcd-password-file %s is empty", c.etcdPasswordFile)
		}
	}
	switch {
	case c.etcdUser != "" && c.etcdPassword == "":
		return errors.New("--etcd-username needs a password: --etcd-password-file, $COORDINATORD_ETCD_PASSWORD or --etcd-password")
	case c.etcdUser == "" && c.etcdPassword != "":
		return errors.New("an etcd password (--etcd-password, --etcd-password-file or $COORDINATORD_ETCD_PASSWORD) needs --etcd-username")
	}
	return nil
}

// validate checks the cluster flags against each other and --etcd-endpoints
// (endpoints), with errors that name the flags.
func (c *clusterFlags) validate(endpoints []string) error {
	if err := c.validateSecurity(endpoints); err != nil {
		return err
	}
	for _, f := range [][2]string{{"--advertise-grpc", c.advertiseGRPC}, {"--advertise-http", c.advertiseHTTP}} {
		if f[1] == "" {
			continue
		}
		host, port, err := net.SplitHostPort(f[1])
		if err != nil || host == "" || port == "" || port == "0" {
			return fmt.Errorf("%s %q: want host:port with a fixed port, reachable by the other replicas", f[0], f[1])
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return fmt.Errorf("%s %q: an unspecified address cannot be reached; give this host's name or IP", f[0], f[1])
		}
	}
	if len(endpoints) > 0 {
		if c.initialCluster != "" {
			return errors.New("--initial-cluster (embedded etcd cluster) and --etcd-endpoints (external etcd) cannot be used together")
		}
		for _, f := range [][2]string{{"--name", c.name}, {"--peer-addr", c.peerAddr}, {"--etcd-client-addr", c.clientAddr},
			{"--peer-listen-addr", c.peerListenAddr}, {"--etcd-client-listen-addr", c.clientListenAddr}} {
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
	for _, f := range [][2]string{{"--peer-listen-addr", c.peerListenAddr}, {"--etcd-client-listen-addr", c.clientListenAddr}} {
		if f[1] == "" {
			continue
		}
		if host, port, err := net.SplitHostPort(f[1]); err != nil || host == "" || port == "" || port == "0" {
			return fmt.Errorf("%s %q: want host:port with a host (0.0.0.0 for every address) and a fixed port", f[0], f[1])
		}
	}
	if c.clientListenAddr != "" {
		if _, port, err := net.SplitHostPort(c.clientAddr); err != nil || port == "0" {
			return fmt.Errorf("--etcd-client-listen-addr needs --etcd-client-addr, the address advertised, with a fixed port (got %q)", c.clientAddr)
		}
	}
	if c.initialCluster == "" {
		if c.peerListenAddr != "" {
			return errors.New("--peer-listen-addr needs --initial-cluster, which names the peer address advertised")
		}
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
	scheme := "http"
	if !c.peerTLS.Empty() {
		scheme = "https"
	}
	for _, n := range names {
		for _, u := range members[n] {
			switch {
			case u.Scheme == "https" && scheme == "http":
				return fmt.Errorf("--initial-cluster: member %s: %q is https: needs --peer-cert, --peer-key and --peer-ca", n, u.String())
			case u.Scheme == "http" && scheme == "https":
				return fmt.Errorf("--initial-cluster: member %s: %q is plain http, but --peer-cert makes peer URLs https://", n, u.String())
			case u.Scheme != scheme || u.Port() == "" || u.Port() == "0":
				return fmt.Errorf("--initial-cluster: member %s: %q: want %s://host:port with a fixed port", n, u.String(), scheme)
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

// apply copies the cluster flags (validated) into cfg. With peer TLS and
// no client TLS flags, the peer files serve the client listener too.
func (c *clusterFlags) apply(cfg *server.Config) {
	cfg.Name, cfg.InitialCluster, cfg.PeerAddr, cfg.EtcdClientAddr = c.name, c.initialCluster, c.peerAddr, c.clientAddr
	cfg.PeerListenAddr, cfg.EtcdClientListenAddr = c.peerListenAddr, c.clientListenAddr
	if c.initialCluster != "" {
		cfg.ClusterState = c.state
	}
	cfg.EtcdPeerTLS, cfg.EtcdClientTLS = c.peerTLS, c.clientTLS
	if cfg.EtcdClientTLS.Empty() {
		cfg.EtcdClientTLS = c.peerTLS
	}
	cfg.EtcdTLS, cfg.EtcdUsername, cfg.EtcdPassword = c.etcdTLS, c.etcdUser, c.etcdPassword
	cfg.AdvertiseGRPC, cfg.AdvertiseHTTP = c.advertiseGRPC, c.advertiseHTTP
}

// plaintextBeyondLoopback names an embedded etcd listener that would serve
// plaintext beyond loopback (flag and address), or returns "" if none
// would: the peer listener of a cluster member without --peer-cert, and an
// --etcd-client-addr without client TLS. Either lets anyone who reaches it
// read and change every key. What counts is the address bound: the listen
// address when one is given apart from the advertised one.
func (c *clusterFlags) plaintextBeyondLoopback() (flag, addr string) {
	if c.initialCluster != "" && c.peerTLS.Empty() {
		if c.peerListenAddr != "" {
			if !isLoopback(c.peerListenAddr) {
				return "--peer-listen-addr", c.peerListenAddr
			}
			return c.clientBeyondLoopback()
		}
		peer := c.peerAddr
		if peer == "" {
			if members, err := types.NewURLsMap(c.initialCluster); err == nil {
				for _, u := range members[c.name] {
					peer = u.Host
				}
			}
		}
		if peer != "" && !isLoopback(peer) {
			return "--peer-addr", peer
		}
	}
	return c.clientBeyondLoopback()
}

// clientBeyondLoopback is plaintextBeyondLoopback's client listener.
func (c *clusterFlags) clientBeyondLoopback() (flag, addr string) {
	if !c.clientTLS.Empty() || !c.peerTLS.Empty() {
		return "", ""
	}
	switch {
	case c.clientListenAddr != "":
		if !isLoopback(c.clientListenAddr) {
			return "--etcd-client-listen-addr", c.clientListenAddr
		}
	case c.clientAddr != "" && !isLoopback(c.clientAddr):
		return "--etcd-client-addr", c.clientAddr
	}
	return "", ""
}
