package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/coordinator/coordinator/coordinator/server"
	"github.com/coordinator/coordinator/security/tlsfiles"
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
			`--initial-cluster: member n1: "https://127.0.0.1:2380" is https: needs --peer-cert, --peer-key and --peer-ca`},
		{[]string{"--initial-cluster", "n1", "--name", "n1"}, "--initial-cluster \"n1\":"},
		{[]string{"--initial-cluster", threeMembers, "--name", "n1", "--initial-cluster-state", "old"},
			`--initial-cluster-state must be new or existing, not "old"`},
		{[]string{"--initial-cluster-state", "existing"}, "--initial-cluster-state existing needs --initial-cluster"},
		{[]string{"--peer-addr", "12380"}, `--peer-addr "12380": want host:port`},
		{[]string{"--peer-listen-addr", "0.0.0.0:2380"}, "--peer-listen-addr needs --initial-cluster"},
		{[]string{"--initial-cluster", threeMembers, "--name", "n1", "--peer-listen-addr", "0.0.0.0:0"},
			`--peer-listen-addr "0.0.0.0:0": want host:port with a host (0.0.0.0 for every address) and a fixed port`},
		{[]string{"--initial-cluster", threeMembers, "--name", "n1", "--peer-listen-addr", ":2380"}, `--peer-listen-addr ":2380": want host:port with a host`},
		{[]string{"--etcd-client-listen-addr", "0.0.0.0:2379"}, "--etcd-client-listen-addr needs --etcd-client-addr, the address advertised, with a fixed port"},
		{[]string{"--etcd-client-listen-addr", "0.0.0.0:2379", "--etcd-client-addr", "localhost:0"}, "--etcd-client-listen-addr needs --etcd-client-addr"},
		{[]string{"--peer-listen-addr", "0.0.0.0:2380", "--etcd-endpoints", "http://10.0.0.1:2379"},
			"--peer-listen-addr configures the embedded etcd and cannot be used with --etcd-endpoints"},
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
		if err := tc.c.validate(nil); err != nil {
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

// The etcd TLS and auth flags: files that go together, embedded and
// external settings kept apart, URL schemes that match the peer TLS.
func TestEtcdSecurityFlagErrors(t *testing.T) {
	secure := strings.ReplaceAll(threeMembers, "http://", "https://")
	peer := []string{"--peer-cert", "p.crt", "--peer-key", "p.key", "--peer-ca", "ca.crt"}
	ext := []string{"--etcd-endpoints", "https://10.0.0.1:2379"}
	with := func(a ...[]string) []string { return slices.Concat(a...) }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--peer-cert", "p.crt"}, "--peer-cert, --peer-key and --peer-ca go together: missing --peer-key, --peer-ca"},
		{[]string{"--peer-key", "p.key", "--peer-ca", "ca.crt"}, "--peer-cert, --peer-key and --peer-ca go together: missing --peer-cert"},
		{with(peer, []string{"--etcd-client-cert", "c.crt"}),
			"--etcd-client-cert, --etcd-client-key and --etcd-client-ca go together: missing --etcd-client-key, --etcd-client-ca"},
		{with(peer, ext), "--peer-cert configures the embedded etcd and cannot be used with --etcd-endpoints"},
		{with([]string{"--etcd-client-ca", "ca.crt"}, ext), "--etcd-client-ca configures the embedded etcd and cannot be used with --etcd-endpoints"},
		{[]string{"--etcd-cacert", "ca.crt"}, "--etcd-cacert is for an external etcd and needs --etcd-endpoints"},
		{[]string{"--etcd-username", "root", "--etcd-password", "pw"}, "--etcd-username is for an external etcd and needs --etcd-endpoints"},
		{[]string{"--etcd-password-file", "pw.txt"}, "--etcd-password-file is for an external etcd and needs --etcd-endpoints"},
		{with(ext, []string{"--etcd-cert", "c.crt"}), "--etcd-cert needs --etcd-key"},
		{with(ext, []string{"--etcd-key", "c.key"}), "--etcd-key needs --etcd-cert"},
		{[]string{"--etcd-endpoints", "http://10.0.0.1:2379", "--etcd-cacert", "ca.crt"},
			"--etcd-endpoints http://10.0.0.1:2379 is plain http, but --etcd-cacert/--etcd-cert configure TLS: use https://"},
		{with(ext, []string{"--etcd-username", "root"}), "--etcd-username needs a password"},
		{with(ext, []string{"--etcd-password", "pw"}), "needs --etcd-username"},
		{with(ext, []string{"--etcd-username", "root", "--etcd-password", "pw", "--etcd-password-file", "pw.txt"}),
			"--etcd-password and --etcd-password-file cannot be used together"},
		{with(ext, []string{"--etcd-username", "root", "--etcd-password-file", filepath.Join(t.TempDir(), "missing")}),
			"--etcd-password-file: open "},
		{[]string{"--initial-cluster", secure, "--name", "n1"},
			`--initial-cluster: member n1: "https://127.0.0.1:12380" is https: needs --peer-cert, --peer-key and --peer-ca`},
		{with(peer, []string{"--initial-cluster", threeMembers, "--name", "n1"}),
			`--initial-cluster: member n1: "http://127.0.0.1:12380" is plain http, but --peer-cert makes peer URLs https://`},
		{with(peer, []string{"--initial-cluster", "n1=https://127.0.0.1:0", "--name", "n1"}), "want https://host:port with a fixed port"},
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

	// A setting from the environment is named as such; the password is not
	// repeated.
	t.Setenv("COORDINATORD_ETCD_PASSWORD", "s3cret")
	var stderr bytes.Buffer
	if code := run(ext, io.Discard, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "needs --etcd-username (set by $COORDINATORD_ETCD_PASSWORD)") ||
		strings.Contains(stderr.String(), "s3cret") {
		t.Errorf("password from the environment without a user: exit %d, stderr %q", code, stderr.String())
	}
}

// parseCluster parses args and the variables env as coordinatord does,
// for the cluster flags and --etcd-endpoints, and validates them.
func parseCluster(t *testing.T, args []string, env map[string]string) (*clusterFlags, error) {
	t.Helper()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	endpoints := fs.String("etcd-endpoints", "", "")
	c := registerClusterFlags(fs)
	if _, err := parseCommandLine(fs, args, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatalf("%q: %v", args, err)
	}
	var eps []string
	if *endpoints != "" {
		eps = strings.Split(*endpoints, ",")
	}
	return c, c.validate(eps)
}

func TestEtcdSecurityFlagsApply(t *testing.T) {
	secure := strings.ReplaceAll(threeMembers, "http://", "https://")
	peer := tlsfiles.Files{Cert: "p.crt", Key: "p.key", CA: "ca.crt"}
	peerArgs := []string{"--peer-cert", peer.Cert, "--peer-key", peer.Key, "--peer-ca", peer.CA}
	client := tlsfiles.Files{Cert: "c.crt", Key: "c.key", CA: "cca.crt"}
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want server.Config
	}{
		{"peer TLS serves the client listener too",
			slices.Concat(peerArgs, []string{"--initial-cluster", secure, "--name", "n1"}),
			nil, server.Config{EtcdPeerTLS: peer, EtcdClientTLS: peer}},
		{"client TLS of its own",
			slices.Concat(peerArgs, []string{"--initial-cluster", secure, "--name", "n1",
				"--etcd-client-cert", client.Cert, "--etcd-client-key", client.Key, "--etcd-client-ca", client.CA}),
			nil, server.Config{EtcdPeerTLS: peer, EtcdClientTLS: client}},
		{"single member with client TLS only",
			[]string{"--etcd-client-addr", "127.0.0.1:2379", "--etcd-client-cert", client.Cert, "--etcd-client-key", client.Key, "--etcd-client-ca", client.CA},
			nil, server.Config{EtcdClientTLS: client}},
		{"external etcd, password from the environment",
			[]string{"--etcd-endpoints", "https://10.0.0.1:2379", "--etcd-cacert", "ca.crt", "--etcd-cert", "c.crt", "--etcd-key", "c.key", "--etcd-username", "coord"},
			map[string]string{"COORDINATORD_ETCD_PASSWORD": "from-env"},
			server.Config{EtcdTLS: tlsfiles.Files{CA: "ca.crt", Cert: "c.crt", Key: "c.key"}, EtcdUsername: "coord", EtcdPassword: "from-env"}},
		{"external etcd, CA only, password from a file",
			[]string{"--etcd-endpoints", "10.0.0.1:2379", "--etcd-cacert", "ca.crt", "--etcd-username", "coord", "--etcd-password-file", pwFile},
			nil, server.Config{EtcdTLS: tlsfiles.Files{CA: "ca.crt"}, EtcdUsername: "coord", EtcdPassword: "from-file"}},
		{"external etcd, password on the command line",
			[]string{"--etcd-endpoints", "http://10.0.0.1:2379", "--etcd-username", "coord", "--etcd-password", "pw"},
			nil, server.Config{EtcdUsername: "coord", EtcdPassword: "pw"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseCluster(t, tc.args, tc.env)
			if err != nil {
				t.Fatalf("%q: %v", tc.args, err)
			}
			var got server.Config
			c.apply(&got)
			if got.EtcdPeerTLS != tc.want.EtcdPeerTLS || got.EtcdClientTLS != tc.want.EtcdClientTLS || got.EtcdTLS != tc.want.EtcdTLS ||
				got.EtcdUsername != tc.want.EtcdUsername || got.EtcdPassword != tc.want.EtcdPassword {
				t.Errorf("applied: peer %+v client %+v external %+v user %q password %q; want peer %+v client %+v external %+v user %q password %q",
					got.EtcdPeerTLS, got.EtcdClientTLS, got.EtcdTLS, got.EtcdUsername, got.EtcdPassword,
					tc.want.EtcdPeerTLS, tc.want.EtcdClientTLS, tc.want.EtcdTLS, tc.want.EtcdUsername, tc.want.EtcdPassword)
			}
		})
	}
}

// --advertise-grpc and --advertise-http must name an address others can
// dial.
func TestAdvertiseFlagErrors(t *testing.T) {
	checkFlagErrors(t, []flagErrorCase{
		{[]string{"--advertise-grpc", "0.0.0.0:7400"}, "--advertise-grpc \"0.0.0.0:7400\": an unspecified address cannot be reached"},
		{[]string{"--advertise-http", "coordinator-0"}, "--advertise-http \"coordinator-0\": want host:port"},
		{[]string{"--advertise-grpc", "10.0.0.7:0"}, "with a fixed port"},
	})
}

// The embedded etcd's listeners beyond loopback need TLS, or --insecure,
// as coordinatord's own do.
func TestPlaintextEtcdBeyondLoopbackRefused(t *testing.T) {
	checkFlagErrors(t, []flagErrorCase{
		{[]string{"--name", "n1", "--initial-cluster", "n1=http://10.1.2.3:2380"}, "--peer-addr 10.1.2.3:2380: the embedded etcd would listen beyond loopback without TLS"},
		{[]string{"--name", "n1", "--initial-cluster", "n1=http://127.0.0.1:2380", "--peer-addr", "0.0.0.0:2380"}, "--peer-addr 0.0.0.0:2380"},
		{[]string{"--etcd-client-addr", "0.0.0.0:2379"}, "give --etcd-client-cert, --etcd-client-key and --etcd-client-ca"},
		// What is bound counts, not what is advertised.
		{[]string{"--name", "n1", "--initial-cluster", "n1=http://127.0.0.1:2380", "--peer-listen-addr", "0.0.0.0:2380"},
			"--peer-listen-addr 0.0.0.0:2380: the embedded etcd would listen beyond loopback without TLS"},
		{[]string{"--etcd-client-addr", "127.0.0.1:2379", "--etcd-client-listen-addr", "0.0.0.0:2379"},
			"--etcd-client-listen-addr 0.0.0.0:2379: the embedded etcd would listen beyond loopback without TLS, and whoever reaches it could read and change every key: give --etcd-client-cert"},
		{[]string{"--name", "n1", "--initial-cluster", "n1=http://127.0.0.1:2380", "--peer-listen-addr", "127.0.0.1:2380",
			"--etcd-client-addr", "127.0.0.1:2379", "--etcd-client-listen-addr", "0.0.0.0:2379"}, "--etcd-client-listen-addr 0.0.0.0:2379"},
	})

	// Advertised names beyond loopback with listeners bound to loopback
	// (behind a proxy that owns the name) serve no plaintext beyond it;
	// with peer TLS, listening on every address is what a pod does.
	for _, args := range [][]string{
		{"--name", "n1", "--initial-cluster", "n1=http://coordinator-0.coordinator-peer.ns.svc:2380", "--peer-listen-addr", "127.0.0.1:2380",
			"--etcd-client-addr", "coordinator-0.coordinator-peer.ns.svc:2379", "--etcd-client-listen-addr", "127.0.0.1:2379"},
		{"--name", "n1", "--initial-cluster", "n1=https://coordinator-0.coordinator-peer.ns.svc:2380", "--peer-listen-addr", "0.0.0.0:2380",
			"--etcd-client-addr", "coordinator-0.coordinator-peer.ns.svc:2379", "--etcd-client-listen-addr", "0.0.0.0:2379",
			"--peer-cert", "p.crt", "--peer-key", "p.key", "--peer-ca", "ca.crt"},
	} {
		c, err := parseCluster(t, args, nil)
		if err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		if flag, addr := c.plaintextBeyondLoopback(); flag != "" {
			t.Errorf("%q: refused as plaintext beyond loopback (%s %s)", args, flag, addr)
		}
	}
}

// --peer-listen-addr and --etcd-client-listen-addr reach server.Config
// apart from the advertised addresses.
func TestListenAddrFlagsApply(t *testing.T) {
	initial := "coordinator-0=https://coordinator-0.coordinator-peer.ns.svc:2380,coordinator-1=https://coordinator-1.coordinator-peer.ns.svc:2380"
	c, err := parseCluster(t, []string{"--name", "coordinator-0", "--initial-cluster", initial,
		"--peer-cert", "p.crt", "--peer-key", "p.key", "--peer-ca", "ca.crt",
		"--peer-listen-addr", "10.4.0.7:2380", "--etcd-client-addr", "coordinator-0.coordinator-peer.ns.svc:2379", "--etcd-client-listen-addr", "0.0.0.0:2379"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got server.Config
	c.apply(&got)
	if got.PeerListenAddr != "10.4.0.7:2380" || got.PeerAddr != "" || got.EtcdClientListenAddr != "0.0.0.0:2379" ||
		got.EtcdClientAddr != "coordinator-0.coordinator-peer.ns.svc:2379" || got.InitialCluster != initial {
		t.Errorf("applied: peer %q listen %q, client %q listen %q, initial %q", got.PeerAddr, got.PeerListenAddr,
			got.EtcdClientAddr, got.EtcdClientListenAddr, got.InitialCluster)
	}
}
