package embedetcd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/client/pkg/v3/types"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.etcd.io/etcd/server/v3/lease"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/coordinator/coordinator/security/tlsfiles"
	"github.com/coordinator/coordinator/storage/internal/zapslog"
)

var (
	// ErrInvalidConfig is returned by Start for a Config it cannot run.
	ErrInvalidConfig = errors.New("embedetcd: invalid config")
	// ErrNotReady is returned by Start when etcd did not become ready
	// (joined its cluster and published itself) before the start deadline.
	ErrNotReady = errors.New("embedetcd: etcd did not become ready")
	// ErrStopped is returned by Start when etcd stopped while starting.
	ErrStopped = errors.New("embedetcd: etcd stopped")
	// ErrNoTransferee is returned by HandOffRaftLeadership when no other
	// member serves clients and follows this one.
	ErrNoTransferee = errors.New("embedetcd: no member to hand Raft leadership to")
)

// Defaults applied by Start to zero fields of Config.
const (
	DefaultName = "default"
	// DefaultClientAddr is a cluster member's; a single member has no
	// client listener unless Config.ClientAddr is set.
	DefaultClientAddr              = "127.0.0.1:0"
	DefaultPeerAddr                = "127.0.0.1:0"
	DefaultStartTimeout            = time.Minute
	DefaultLogLevel                = "error"
	DefaultAutoCompactionMode      = "periodic"
	DefaultAutoCompactionRetention = "10s"

	// Raft timing for a single member (InitialCluster empty): nothing else
	// can campaign, so the election timeout only sets how soon the member
	// elects itself at start (etcd fast-forwards a lone member's clock to
	// one tick short of its election timeout, so it campaigns after one to
	// five ticks, 100-500 ms). The tick is what an idle member costs: each
	// wakes raft's goroutines, and at 25 ms ticks an idle embedded etcd
	// took 1.1-1.3 % of a core here against 0.6 % at 100 ms, a tenth of the
	// idle budget of 2,000 heartbeating sessions (bench/mesh's hb_cpu_pct).
	// Lease minimum TTL is 1.5 election timeouts (750 ms), well under the
	// coordinator's 2 s minimum.
	singleTickMs     = 100
	singleElectionMs = 500

	// pickRetries bounds restarts when a port picked for a ":0" address
	// was taken by someone else between picking and etcd binding it.
	pickRetries = 5
)

// DefaultAutoCompactionRetention keeps seconds of history, not minutes.
// Only a watch resuming after a disconnect reads history (the replicas'
// caches; one that falls behind a compaction lists again), while every
// revision costs memory until it is compacted: etcd keeps each in its
// in-memory index and its database, and the process embedding it is the
// coordinator. A coordinator writes transaction records and pins all the
// time: bench/abuse's 500 transactions/s with an update in progress make
// 1,000 to 3,000 revisions/s, and with "10m" (compacted every 10 minutes,
// so 10 to 20 minutes kept) its live heap grew by about 0.7 MB/s, three
// quarters of it etcd's index, with no end in sight for 10 minutes, and
// its RSS by five times that (the GC target). Periodic compaction every
// 10 s keeps 10 to 20 s.

// Raft timing of a cluster member (InitialCluster set) is etcd's default:
// a 100 ms heartbeat and a 1000 ms election timeout, which tolerate a
// loaded machine or a slow network without spurious elections. A lost
// member's leader is replaced in 1-2 s, and the minimum lease TTL etcd
// grants (1.5 election timeouts) stays under the coordinator's 2 s.

// Config describes one embedded etcd member.
type Config struct {
	// Name is the member name; default "default".
	Name string
	// DataDir holds the member's WAL and database; required. Restarting on
	// the same DataDir keeps keys and leases.
	DataDir string
	// ClientAddr is the host:port serving clients over the network. Port 0
	// picks a free port; Endpoints reports the port in use.
	//
	// A single member (InitialCluster empty) opens no client listener at
	// all unless ClientAddr is set: its process calls it through
	// LocalClient, and a listener would only be one more way in
	// (unauthenticated without ClientTLS). Endpoints and ClientURLs are
	// then empty, and the member publishes no client URL. Set it
	// ("127.0.0.1:0" for a free loopback port) for clients in other
	// processes. A member of a cluster always serves clients (its peers'
	// clients fail over to it, and hand-offs ask it for its status):
	// default "127.0.0.1:0".
	ClientAddr string
	// ClientListenAddr, when set, is the host:port the client listener
	// binds, and ClientAddr only the address advertised to clients and
	// the other members (and dialed by this process's own client). Set it
	// where the advertised name is not an address this host can bind: a
	// Kubernetes pod listens on "0.0.0.0:2379" and advertises its stable
	// DNS name. Its host may be unspecified (0.0.0.0, ::); both ports must
	// be fixed. It needs ClientAddr.
	ClientListenAddr string
	// PeerAddr is the host:port serving raft peers; default "127.0.0.1:0"
	// for a single member. With InitialCluster set it defaults to this
	// member's entry there and must not use port 0 (peers must know it).
	PeerAddr string
	// PeerListenAddr, when set, is the host:port the peer listener binds,
	// and PeerAddr (this member's entry in InitialCluster) only the
	// address advertised to the other members: "0.0.0.0:2380" or the
	// pod's IP in a Kubernetes pod whose peer URL names its stable DNS
	// name. Its host may be unspecified (0.0.0.0, ::); its port must be
	// fixed, and so must PeerAddr's. Default: PeerAddr.
	PeerListenAddr string
	// InitialCluster is "n1=http://127.0.0.1:P1,n2=http://..." naming every
	// member's peer URL (https:// with PeerTLS, http:// without); empty
	// means a single member made of itself. It is only read when DataDir
	// holds no member yet.
	InitialCluster string
	// PeerTLS, when set, secures Raft traffic between members with mutual
	// TLS: the peer URLs are https, every peer presents a certificate that
	// PeerTLS.CA verifies (and etcd checks that its SANs match the
	// address it connects from), and this member presents PeerTLS.Cert to
	// its peers. Cert, Key and CA are all required, and the certificate
	// must allow both server and client use. etcd reads the files at each
	// handshake, so rotated files take effect without a restart.
	PeerTLS tlsfiles.Files
	// ClientTLS, when set, serves clients over https with mutual TLS: a
	// client must present a certificate ClientTLS.CA verifies. Cert, Key
	// and CA are all required; Cert must allow client use too (etcd's own
	// gRPC gateway dials the listener with it), and it is the certificate
	// this package presents when it dials other members (hand-off status).
	// Without a client listener (a single member without ClientAddr) it
	// is unused.
	ClientTLS tlsfiles.Files
	// ClusterState is "new" (default) or "existing" (joining a running
	// cluster that already added this member).
	ClusterState string
	// Logger receives etcd's own logs at LogLevel and above, plus a few of
	// this package's; default slog.Default().
	Logger *slog.Logger
	// LogLevel is etcd's log level: debug, info, warn or error (default):
	// etcd is chatty at info.
	LogLevel string

	// StartTimeout bounds Start when its context has no earlier deadline;
	// default one minute (a new multi-member cluster waits for quorum).
	StartTimeout time.Duration
	// AutoCompactionMode is "periodic" (default) or "revision", and
	// AutoCompactionRetention its retention (DefaultAutoCompactionRetention,
	// or a revision count): history is compacted so that a long-running
	// coordinator writing transaction records does not grow forever.
	AutoCompactionMode      string
	AutoCompactionRetention string
	// QuotaBackendBytes is the database size quota; 0 keeps etcd's default
	// (2 GiB).
	QuotaBackendBytes int64
	// TickMs and ElectionMs override raft's heartbeat interval and election
	// timeout. Zero: 100/500 ms for a single member, etcd's 100/1000 ms for
	// a cluster.
	TickMs, ElectionMs uint
}

// Server is a running embedded etcd member.
type Server struct {
	etcd    *embed.Etcd
	lg      *slog.Logger
	cluster bool // started with InitialCluster: Endpoints adds the other members
	// clientTLS dials other members' client URLs (nil: plain http).
	clientTLS *tls.Config
	name      string
	dataDir   string
	endpoints []string
	peerURLs  []string
	closing   *atomic.Bool // set once Close starts: etcd's shutdown errors are not errors
	closeOnce sync.Once
}

// Start starts an etcd member and waits until it is ready to serve
// (it joined its cluster and published its client URLs), ctx is done, or
// cfg.StartTimeout passes. On error nothing is left running.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()
	lg := cfg.Logger.With("component", "embedetcd", "name", cfg.Name)
	var clientTLS *tls.Config
	if !cfg.ClientTLS.Empty() {
		// Read once here, so that a missing or bad file fails Start with
		// its name; the reloader then follows rotations, as etcd does.
		r, err := tlsfiles.New(cfg.ClientTLS, tlsfiles.WithLogger(lg))
		if err != nil {
			return nil, fmt.Errorf("%w: ClientTLS: %w", ErrInvalidConfig, err)
		}
		clientTLS = r.ClientConfig("")
	}
	if !cfg.PeerTLS.Empty() {
		if _, err := tlsfiles.New(cfg.PeerTLS); err != nil {
			return nil, fmt.Errorf("%w: PeerTLS: %w", ErrInvalidConfig, err)
		}
	}

	for attempt := 1; ; attempt++ {
		closing := new(atomic.Bool)
		ec, picked, err := cfg.embedConfig(closing)
		if err != nil {
			return nil, err
		}
		e, err := embed.StartEtcd(ec)
		if err != nil {
			if picked && attempt < pickRetries && errors.Is(err, syscall.EADDRINUSE) {
				lg.Warn("picked port was taken, retrying", "attempt", attempt, "error", err)
				continue
			}
			return nil, fmt.Errorf("embedetcd: start %q: %w", cfg.Name, err)
		}
		s := &Server{etcd: e, lg: lg, cluster: cfg.InitialCluster != "", clientTLS: clientTLS,
			name: cfg.Name, dataDir: cfg.DataDir, closing: closing}
		for _, l := range e.Clients {
			s.endpoints = append(s.endpoints, cfg.clientScheme()+"://"+l.Addr().String())
		}
		if cfg.ClientListenAddr != "" {
			// The listener may bind every address: clients (this
			// process's own too) dial the advertised one, the name
			// its certificate holds.
			s.endpoints = nil
			for _, u := range ec.AdvertiseClientUrls {
				s.endpoints = append(s.endpoints, u.String())
			}
		}
		for _, u := range ec.AdvertisePeerUrls {
			s.peerURLs = append(s.peerURLs, u.String())
		}
		if err := s.waitReady(ctx); err != nil {
			// embed.Etcd.Close waits for the client servers, which only
			// start once the server is ready or stopping: stop it first.
			s.closing.Store(true)
			e.Server.HardStop()
			s.Close()
			return nil, err
		}
		if cfg.InitialCluster == "" {
			s.refreshPeerURLs(ctx)
		}
		lg.Info("etcd ready", "endpoints", s.Endpoints(), "peer_urls", s.peerURLs, "data_dir", cfg.DataDir,
			"peer_tls", !cfg.PeerTLS.Empty(), "client_tls", !cfg.ClientTLS.Empty() && len(s.endpoints) > 0,
			"member_id", e.Server.MemberID().String(), "cluster_id", e.Server.Cluster().ID().String())
		return s, nil
	}
}

func (s *Server) waitReady(ctx context.Context) error {
	select {
	case <-s.etcd.Server.ReadyNotify():
		return nil
	case <-s.etcd.Server.StopNotify():
		return fmt.Errorf("%w: %q while starting", ErrStopped, s.name)
	case err, ok := <-s.etcd.Err():
		if !ok {
			err = errors.New("error channel closed")
		}
		return fmt.Errorf("%w: %q: %w", ErrStopped, s.name, err)
	case <-ctx.Done():
		return fmt.Errorf("%w: %q: %w", ErrNotReady, s.name, context.Cause(ctx))
	}
}

// refreshPeerURLs makes a single member's stored peer URL follow a new
// port after a restart on the same data dir (port 0 picks a new one each
// time), so that the member list stays true and a member added later can
// reach it. Best effort: a stale peer URL does not affect a single member.
func (s *Server) refreshPeerURLs(ctx context.Context) {
	srv := s.etcd.Server
	members := srv.Cluster().Members()
	if len(members) != 1 || members[0].ID != srv.MemberID() {
		return
	}
	m := members[0]
	if slices.Equal(sortedCopy(m.PeerURLs), sortedCopy(s.peerURLs)) {
		return
	}
	upd := membership.Member{ID: m.ID, RaftAttributes: membership.RaftAttributes{PeerURLs: s.peerURLs}}
	if _, err := srv.UpdateMember(ctx, upd); err != nil {
		s.lg.Warn("cannot update stored peer URLs", "old", m.PeerURLs, "new", s.peerURLs, "error", err)
		return
	}
	s.lg.Info("updated stored peer URLs", "old", m.PeerURLs, "new", s.peerURLs)
}

// Endpoints returns the client URLs a client of this member should use,
// with the ports actually bound (never port 0); https with ClientTLS. For
// a single member, they are the URLs it listens on: none without
// Config.ClientAddr (use LocalClient). For a member of a cluster, its own come
// first, then those the other voting members published, as this member
// knows them now (a member that has not published yet has none), so that
// a client given them fails over when this member stops. Members that
// restart move their client port (with port 0): a long-lived client
// should also re-read the member list (clientv3's AutoSyncInterval).
func (s *Server) Endpoints() []string {
	eps := slices.Clone(s.endpoints)
	if !s.cluster {
		return eps
	}
	srv := s.etcd.Server
	self := srv.MemberID()
	for _, m := range srv.Cluster().Members() {
		if m.ID == self || m.IsLearner || m.Name == "" {
			continue
		}
		for _, u := range m.ClientURLs {
			if !slices.Contains(eps, u) {
				eps = append(eps, u)
			}
		}
	}
	return eps
}

// ClientURLs returns the URLs this member serves clients on, and no other
// member's. A client of a cluster member that lives in the member's process
// should use these only: a watch or keep-alive stream it holds on another
// member would keep that member's graceful stop waiting for etcd's whole
// request timeout (7 s with a cluster's Raft timing), as embed.Etcd.Close
// drains client streams before it stops. A single member started without
// Config.ClientAddr has none.
func (s *Server) ClientURLs() []string { return slices.Clone(s.endpoints) }

// MemberID returns this member's etcd member ID.
func (s *Server) MemberID() uint64 { return uint64(s.etcd.Server.MemberID()) }

// PeerURLs returns the peer URLs this member advertises.
func (s *Server) PeerURLs() []string { return slices.Clone(s.peerURLs) }

// Name returns the member name.
func (s *Server) Name() string { return s.name }

// DataDir returns the member's data directory.
func (s *Server) DataDir() string { return s.dataDir }

// Etcd returns the underlying embedded etcd, for what this package does
// not wrap (e.g. Server.IsLearner, Server.Leader). Do not Close it directly.
func (s *Server) Etcd() *embed.Etcd { return s.etcd }

// LocalClient returns a client that calls this member in process, with no
// gRPC, socket or serialization in between: an etcd round trip then costs
// the Raft proposal, the WAL fsync and the apply, and nothing else (on a
// 2-core machine about half the latency of a loopback gRPC client; see
// docs/BENCHMARKS.md). Requests that would go to another member (a
// proposal on a follower) are forwarded by this member, as for any client.
// It cannot fail over: when this member stops, every call fails. So use it
// where the caller lives and dies with the member, as a single-member
// coordinator does. Close it before Close.
func (s *Server) LocalClient() *clientv3.Client { return v3client.New(s.etcd.Server) }

// RenewLease renews lease id on this member, in process: what a client's
// keep-alive does, without a keep-alive stream per call (a coordinator
// renews a session's lease on each of its heartbeats; through the client,
// each KeepAliveOnce opens and closes a stream). Like LocalClient, use it
// where the caller lives and dies with a single member, which is always
// the Raft leader (a follower's renewal fails with ErrNotPrimary). A lease
// etcd does not know gives rpctypes.ErrGRPCLeaseNotFound, as a client
// would see.
func (s *Server) RenewLease(ctx context.Context, id int64) (ttl time.Duration, err error) {
	secs, err := s.etcd.Server.LeaseRenew(ctx, lease.LeaseID(id))
	switch {
	case errors.Is(err, lease.ErrLeaseNotFound):
		return 0, rpctypes.ErrGRPCLeaseNotFound
	case err != nil:
		return 0, fmt.Errorf("embedetcd: renew lease %016x: %w", id, err)
	}
	return time.Duration(secs) * time.Second, nil
}

// HandOffRaftLeadership moves Raft leadership, when this member has it, to
// another voting member that serves clients now and follows this member
// (the most caught-up of them); it does nothing for a single member or a
// member that does not lead. A process that must fail over fast calls it
// so that its own death is not also the Raft leader's: losing the Raft
// leader costs an election, and the new Raft leader then gives every lease
// its full TTL again (etcd's lessor promotion), so a dead process's leases
// outlive it by one more TTL.
//
// Only a member that answers a client Status is chosen. A member that is
// stopping closes its client listeners before it gives Raft leadership
// away (embed.Etcd.Close), so it is never handed leadership back: a member
// on its way out that takes leadership stalls the others until its
// shutdown's own transfer times out and a Raft election replaces it (that
// stalled writes for more than 7 s). It returns ErrNoTransferee when no
// other member qualifies, and waits at most two election timeouts for the
// transfer.
func (s *Server) HandOffRaftLeadership(ctx context.Context) error {
	srv := s.etcd.Server
	self := srv.MemberID()
	if !s.cluster || srv.Leader() != self {
		return nil
	}
	var (
		to      types.ID
		applied uint64
	)
	for _, m := range srv.Cluster().Members() {
		if m.ID == self || m.IsLearner || len(m.ClientURLs) == 0 {
			continue
		}
		st, err := memberStatus(ctx, m.ClientURLs[0], s.clientTLS)
		if err != nil {
			s.lg.Debug("not a Raft transferee: no status", "member", m.Name, "error", err)
			continue
		}
		if st.Header.GetMemberId() != uint64(m.ID) || st.Leader != uint64(self) {
			s.lg.Debug("not a Raft transferee: does not follow this member", "member", m.Name, "its_leader", types.ID(st.Leader).String())
			continue
		}
		if to == 0 || st.RaftAppliedIndex > applied {
			to, applied = m.ID, st.RaftAppliedIndex
		}
	}
	if to == 0 {
		return ErrNoTransferee
	}
	if srv.Leader() != self { // lost it while asking
		return nil
	}
	election := time.Duration(srv.Cfg.ElectionTicks*int(srv.Cfg.TickMs)) * time.Millisecond
	tctx, cancel := context.WithTimeout(ctx, 2*election)
	defer cancel()
	if err := srv.MoveLeader(tctx, uint64(self), uint64(to)); err != nil {
		return fmt.Errorf("embedetcd: move Raft leadership to %s: %w", to, err)
	}
	return nil
}

// boundLeaderTransfer bounds what etcd's shutdown spends on handing Raft
// leadership away. embed.Etcd.Close transfers it before stopping and waits
// for the transferee to lead for up to etcd's request timeout: 5 s plus two
// election timeouts, 7 s in a cluster. Raft gives a transfer up after one
// election timeout (a transferee that missed the TimeoutNow, or is cut off,
// or a leader that stepped down meanwhile), and etcd then waits the rest
// for nothing: a member stopping right after its cluster formed did exactly
// that, and a SIGTERM took more than 5 s. Here the same transfer runs first
// and gets two election timeouts; a member that still leads after them
// stops without coordination (as a crash does: the others elect a leader
// within an election timeout), and etcd's own transfer then finds nothing
// to do.
func (s *Server) boundLeaderTransfer() {
	srv := s.etcd.Server
	if !s.cluster || !s.LeadsRaft() {
		return
	}
	// Stop serving clients first, as embed.Etcd.Close does before its own
	// transfer: another replica's hand-off (HandOffRaftLeadership) only
	// picks a member that answers a client Status, so Raft leadership
	// given away now is not handed back to this member on its way out.
	for _, l := range s.etcd.Clients {
		l.Close()
	}
	election := time.Duration(srv.Cfg.ElectionTicks*int(srv.Cfg.TickMs)) * time.Millisecond
	done := make(chan error, 1)
	// On a timeout it keeps waiting until HardStop cancels the server's
	// context, which ends it.
	go func() { done <- srv.TryTransferLeadershipOnShutdown() }()
	select {
	case err := <-done:
		if err != nil {
			s.lg.Warn("Raft leadership transfer on shutdown failed", "error", err)
		}
	case <-time.After(2 * election):
		s.lg.Warn("Raft leadership transfer on shutdown did not finish in time", "bound", 2*election)
	}
	if s.LeadsRaft() {
		srv.HardStop()
	}
}

// statusTimeout bounds the Status a hand-off asks of each candidate.
const statusTimeout = 500 * time.Millisecond

// memberStatus asks one member, at url, for its status, over TLS with
// tlsc (this member's client certificate) when set.
func memberStatus(ctx context.Context, url string, tlsc *tls.Config) (*clientv3.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: statusTimeout, Context: ctx,
		TLS: tlsc, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	return cli.Status(ctx, url)
}

// LeadsRaft reports whether this member is the Raft leader.
func (s *Server) LeadsRaft() bool { return s.etcd.Server.Leader() == s.etcd.Server.MemberID() }

// RaftLeaderChanged returns a channel closed at the next change of Raft
// leader (take it before checking LeadsRaft, so no change is missed).
func (s *Server) RaftLeaderChanged() <-chan struct{} { return s.etcd.Server.LeaderChangedNotify() }

// Stopped is closed when the etcd server has stopped, after Close or on a
// fatal error.
func (s *Server) Stopped() <-chan struct{} { return s.etcd.Server.StopNotify() }

// Err reports errors of etcd's client and peer servers while running; it is
// closed once Close has finished.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops etcd and waits until it has stopped. Client streams still open
// (watches, keep-alives) delay it by up to etcd's request timeout: close
// clients first. Close is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		start := time.Now()
		s.closing.Store(true)
		s.boundLeaderTransfer()
		s.etcd.Close()
		s.lg.Info("etcd closed", "took", time.Since(start))
	})
}

func (cfg *Config) setDefaults() error {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.DataDir == "" {
		return fmt.Errorf("%w: DataDir is required", ErrInvalidConfig)
	}
	if cfg.ClientAddr == "" && cfg.InitialCluster != "" {
		cfg.ClientAddr = DefaultClientAddr
	}
	for _, f := range []struct {
		field string
		files tlsfiles.Files
	}{{"PeerTLS", cfg.PeerTLS}, {"ClientTLS", cfg.ClientTLS}} {
		if !f.files.Empty() && (f.files.Cert == "" || f.files.Key == "" || f.files.CA == "") {
			return fmt.Errorf("%w: %s needs Cert, Key and CA (got cert %q, key %q, CA %q)",
				ErrInvalidConfig, f.field, f.files.Cert, f.files.Key, f.files.CA)
		}
	}
	if cfg.ClusterState == "" {
		cfg.ClusterState = embed.ClusterStateFlagNew
	}
	if cfg.ClusterState != embed.ClusterStateFlagNew && cfg.ClusterState != embed.ClusterStateFlagExisting {
		return fmt.Errorf("%w: ClusterState %q: want %q or %q", ErrInvalidConfig, cfg.ClusterState,
			embed.ClusterStateFlagNew, embed.ClusterStateFlagExisting)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = DefaultLogLevel
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	if cfg.AutoCompactionMode == "" {
		cfg.AutoCompactionMode = DefaultAutoCompactionMode
	}
	if cfg.AutoCompactionRetention == "" {
		cfg.AutoCompactionRetention = DefaultAutoCompactionRetention
	}
	if cfg.TickMs == 0 && cfg.ElectionMs == 0 && cfg.InitialCluster == "" {
		cfg.TickMs, cfg.ElectionMs = singleTickMs, singleElectionMs
	}
	if cfg.ClientAddr != "" {
		_, port, err := splitAddr("ClientAddr", cfg.ClientAddr)
		if err != nil {
			return err
		}
		if cfg.ClientListenAddr != "" && port == 0 {
			return fmt.Errorf("%w: ClientAddr %q: needs a fixed port with ClientListenAddr (it is advertised as it is)", ErrInvalidConfig, cfg.ClientAddr)
		}
	}
	if cfg.ClientListenAddr != "" {
		if cfg.ClientAddr == "" {
			return fmt.Errorf("%w: ClientListenAddr %q needs ClientAddr, the address advertised", ErrInvalidConfig, cfg.ClientListenAddr)
		}
		if err := checkListenAddr("ClientListenAddr", cfg.ClientListenAddr); err != nil {
			return err
		}
	}
	if cfg.PeerListenAddr != "" {
		if err := checkListenAddr("PeerListenAddr", cfg.PeerListenAddr); err != nil {
			return err
		}
	}
	if cfg.InitialCluster == "" {
		if cfg.PeerAddr == "" {
			cfg.PeerAddr = DefaultPeerAddr
		}
		if cfg.ClusterState == embed.ClusterStateFlagExisting {
			return fmt.Errorf("%w: ClusterState %q needs InitialCluster", ErrInvalidConfig, cfg.ClusterState)
		}
		_, port, err := splitAddr("PeerAddr", cfg.PeerAddr)
		if err == nil && cfg.PeerListenAddr != "" && port == 0 {
			return fmt.Errorf("%w: PeerAddr %q: needs a fixed port with PeerListenAddr (it is advertised as it is)", ErrInvalidConfig, cfg.PeerAddr)
		}
		return err
	}

	// A member of a cluster: its peer address is fixed by InitialCluster.
	m, err := types.NewURLsMap(cfg.InitialCluster)
	if err != nil {
		return fmt.Errorf("%w: InitialCluster %q: %w", ErrInvalidConfig, cfg.InitialCluster, err)
	}
	self, ok := m[cfg.Name]
	if !ok || len(self) == 0 {
		return fmt.Errorf("%w: InitialCluster %q has no member named %q", ErrInvalidConfig, cfg.InitialCluster, cfg.Name)
	}
	scheme := cfg.peerScheme()
	for name, us := range m {
		for _, u := range us {
			if u.Scheme != scheme {
				why := "without PeerTLS"
				if scheme == "https" {
					why = "with PeerTLS"
				}
				return fmt.Errorf("%w: InitialCluster member %q: scheme %q: want %s %s", ErrInvalidConfig, name, u.Scheme, scheme, why)
			}
			if u.Port() == "" || u.Port() == "0" {
				return fmt.Errorf("%w: InitialCluster member %q: %q needs a fixed port", ErrInvalidConfig, name, u.Host)
			}
		}
	}
	if cfg.PeerAddr == "" {
		cfg.PeerAddr = self[0].Host
	}
	if !slices.ContainsFunc(self, func(u url.URL) bool { return u.Host == cfg.PeerAddr }) {
		return fmt.Errorf("%w: PeerAddr %q is not %q's peer URL in InitialCluster %q",
			ErrInvalidConfig, cfg.PeerAddr, cfg.Name, cfg.InitialCluster)
	}
	return nil
}

// peerScheme is the scheme of the peer URLs: https with PeerTLS.
func (cfg *Config) peerScheme() string {
	if cfg.PeerTLS.Empty() {
		return "http"
	}
	return "https"
}

// clientScheme is the scheme of the client URLs: https with ClientTLS.
func (cfg *Config) clientScheme() string {
	if cfg.ClientTLS.Empty() {
		return "http"
	}
	return "https"
}

// tlsInfo is etcd's view of files: a certificate it serves and presents
// as a client, and peers' (or clients') certificates required and
// verified against the CA.
func tlsInfo(f tlsfiles.Files) transport.TLSInfo {
	return transport.TLSInfo{CertFile: f.Cert, KeyFile: f.Key, TrustedCAFile: f.CA, ClientCertAuth: true}
}

// embedConfig translates cfg, picking free ports for ":0" addresses;
// picked reports whether it did.
func (cfg *Config) embedConfig(closing *atomic.Bool) (ec *embed.Config, picked bool, err error) {
	serveClients := cfg.ClientAddr != ""
	var (
		clientHost string
		clientPort int
	)
	if serveClients {
		clientHost, clientPort, _ = splitAddr("ClientAddr", cfg.ClientAddr)
	}
	peerHost, peerPort, _ := splitAddr("PeerAddr", cfg.PeerAddr)
	var hosts []string
	if serveClients && clientPort == 0 {
		hosts = append(hosts, clientHost)
	}
	if peerPort == 0 {
		hosts = append(hosts, peerHost)
	}
	if len(hosts) > 0 {
		ports, err := freePorts(hosts)
		if err != nil {
			return nil, false, fmt.Errorf("embedetcd: pick ports: %w", err)
		}
		if serveClients && clientPort == 0 {
			clientPort, ports = ports[0], ports[1:]
		}
		if peerPort == 0 {
			peerPort = ports[0]
		}
		picked = true
	}
	peerURL := url.URL{Scheme: cfg.peerScheme(), Host: net.JoinHostPort(peerHost, strconv.Itoa(peerPort))}

	ec = embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = cfg.DataDir
	// No client URL at all (not etcd's default localhost:2379) for a
	// single member without ClientAddr: it serves LocalClient only.
	ec.ListenClientUrls, ec.AdvertiseClientUrls = nil, nil
	if serveClients {
		clientURL := url.URL{Scheme: cfg.clientScheme(), Host: net.JoinHostPort(clientHost, strconv.Itoa(clientPort))}
		ec.ListenClientUrls = []url.URL{clientURL}
		ec.AdvertiseClientUrls = []url.URL{clientURL}
		if cfg.ClientListenAddr != "" {
			ec.ListenClientUrls = []url.URL{{Scheme: cfg.clientScheme(), Host: cfg.ClientListenAddr}}
		}
		if !cfg.ClientTLS.Empty() {
			ec.ClientTLSInfo = tlsInfo(cfg.ClientTLS)
		}
	}
	ec.ListenPeerUrls = []url.URL{peerURL}
	ec.AdvertisePeerUrls = []url.URL{peerURL}
	if cfg.PeerListenAddr != "" {
		ec.ListenPeerUrls = []url.URL{{Scheme: cfg.peerScheme(), Host: cfg.PeerListenAddr}}
	}
	if !cfg.PeerTLS.Empty() {
		ec.PeerTLSInfo = tlsInfo(cfg.PeerTLS)
	}
	ec.InitialCluster = cfg.InitialCluster
	if ec.InitialCluster == "" {
		ec.InitialCluster = cfg.Name + "=" + peerURL.String()
	}
	ec.ClusterState = cfg.ClusterState
	ec.AutoCompactionMode = cfg.AutoCompactionMode
	ec.AutoCompactionRetention = cfg.AutoCompactionRetention
	ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	if cfg.TickMs != 0 {
		ec.TickMs = cfg.TickMs
	}
	if cfg.ElectionMs != 0 {
		ec.ElectionMs = cfg.ElectionMs
	}
	ec.Logger = "zap"
	ec.LogLevel = cfg.LogLevel
	level := zapslog.ParseLevel(cfg.LogLevel, zapcore.ErrorLevel)
	h := &shutdownHandler{Handler: cfg.Logger.Handler(), closing: closing}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(
		zapslog.New(slog.New(h).With("component", "etcd", "name", cfg.Name), level))
	return ec, picked, nil
}

// shutdownHandler demotes etcd errors that are not: those embed logs for
// its own listeners and servers closing ("setting up serving from embedded
// etcd failed." with "http: Server closed" and the like) once Close
// started, and the storage-version update a fresh member tries before its
// first commit ("missing term information"), which it retries by itself.
type shutdownHandler struct {
	slog.Handler
	closing *atomic.Bool
}

func (h *shutdownHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError && (h.closing.Load() || benignAtStart(r)) {
		r.Level = slog.LevelDebug
		if !h.Handler.Enabled(ctx, r.Level) {
			return nil
		}
	}
	return h.Handler.Handle(ctx, r)
}

func benignAtStart(r slog.Record) bool {
	if r.Message != "failed to update storage version" {
		return false
	}
	benign := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" && strings.Contains(a.Value.String(), "missing term information") {
			benign = true
		}
		return !benign
	})
	return benign
}

func (h *shutdownHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &shutdownHandler{Handler: h.Handler.WithAttrs(as), closing: h.closing}
}

func (h *shutdownHandler) WithGroup(name string) slog.Handler {
	return &shutdownHandler{Handler: h.Handler.WithGroup(name), closing: h.closing}
}

// splitAddr parses host:port; the host must be an IP address or a name
// (not empty, not unspecified: it is advertised as is).
// checkListenAddr checks an address that is only listened on, never
// advertised: host:port with a host (which may be unspecified, 0.0.0.0 or
// ::, to listen on every address) and a fixed port.
func checkListenAddr(field, addr string) error {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: %s %q: %w", ErrInvalidConfig, field, addr, err)
	}
	if host == "" {
		return fmt.Errorf("%w: %s %q: needs a host (0.0.0.0 for every address)", ErrInvalidConfig, field, addr)
	}
	if port, err := strconv.Atoi(p); err != nil || port <= 0 || port > 65535 {
		return fmt.Errorf("%w: %s %q: needs a fixed port", ErrInvalidConfig, field, addr)
	}
	return nil
}

func splitAddr(field, addr string) (host string, port int, err error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%w: %s %q: %w", ErrInvalidConfig, field, addr, err)
	}
	port, err = strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%w: %s %q: bad port", ErrInvalidConfig, field, addr)
	}
	if host == "" {
		return "", 0, fmt.Errorf("%w: %s %q: needs a host (it is advertised)", ErrInvalidConfig, field, addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return "", 0, fmt.Errorf("%w: %s %q: unspecified address cannot be advertised", ErrInvalidConfig, field, addr)
	}
	return host, port, nil
}

// freePorts returns one free TCP port per host. All listeners stay open
// until every port is known, so the ports are distinct.
//
// embed.StartEtcd binds its own listeners from URLs (etcd v3.7 has no way
// to hand it a net.Listener), and a URL with port 0 would be advertised
// as ":0" to clients and peers. So the port is picked here and released
// just before etcd binds it; the rare loss of that race is an EADDRINUSE
// that Start retries with new ports.
func freePorts(hosts []string) ([]int, error) {
	ports := make([]int, 0, len(hosts))
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for _, h := range hosts {
		l, err := net.Listen("tcp", net.JoinHostPort(h, "0"))
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
