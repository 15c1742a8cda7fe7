package embedetcd

import (
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A Raft leader whose followers stop answering (their peer traffic frozen,
// connections still open, as a loaded or partitioned peer looks) stops
// within its bound: etcd's shutdown alone hands leadership to one of them
// and then waits its whole request timeout (7 s here) for a transfer that
// Raft gave up after one election timeout; a member stopping right after
// its cluster formed took more than 5 s to exit on SIGTERM that way.
func TestCloseOfALeaderWhoseTransferFailsIsBounded(t *testing.T) {
	c := startClusterWith(t, clusterOpts{proxied: true})
	lead := c.raftLeader(t)
	for i, px := range c.proxies {
		if i != lead {
			px.freeze()
		}
	}
	srv := c.servers[lead]
	election := time.Duration(srv.Etcd().Server.Cfg.ElectionTicks*int(srv.Etcd().Server.Cfg.TickMs)) * time.Millisecond
	begin := time.Now()
	srv.Close()
	took := time.Since(begin)
	c.servers[lead] = nil
	t.Logf("leader n%d closed in %v (election timeout %v, etcd's request timeout %v)",
		lead+1, took.Round(time.Millisecond), election, srv.Etcd().Server.Cfg.ReqTimeout())
	// The bound: two election timeouts for the transfer, then up to 1 s
	// that etcd's Close gives idle peer connections, and slack for a loaded
	// machine; etcd's own wait would be its request timeout, 7 s.
	if bound := 5 * time.Second; took > bound {
		t.Fatalf("Close of a Raft leader whose followers are cut off took %v, want at most %v", took, bound)
	}
}

// peerProxy forwards TCP connections to a member's peer listener until it
// is frozen; frozen, it keeps every connection open and forwards nothing
// more in either direction.
type peerProxy struct {
	l      net.Listener
	target string

	mu     sync.Mutex
	frozen chan struct{} // closed while running; replaced by an open one on freeze
	conns  []net.Conn
}

func newPeerProxy(target string) (*peerProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	run := make(chan struct{})
	close(run)
	p := &peerProxy{l: l, target: target, frozen: run}
	go p.serve()
	return p, nil
}

func (p *peerProxy) port() int { return p.l.Addr().(*net.TCPAddr).Port }

func (p *peerProxy) serve() {
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		var exempt atomic.Bool
		go p.pipe(out, in, &exempt, true)
		go p.pipe(in, out, &exempt, false)
	}
}

// pipe copies from src to dst; frozen, it holds what it read and reads no
// more. Only Raft's connections (streams, pipeline, probes: paths under
// /raft) freeze. The others (a member's /version and /members, asked on
// connections of their own) go on: etcd's cluster-version monitor waits
// its whole request timeout for /version, uncancellable, and would hold
// the shutdown with it, which is not what the test is about.
func (p *peerProxy) pipe(dst, src net.Conn, exempt *atomic.Bool, request bool) {
	buf := make([]byte, 32<<10)
	first := request
	for {
		n, err := src.Read(buf)
		if first && n > 0 {
			first = false
			_, path, _ := strings.Cut(string(buf[:n]), " ")
			exempt.Store(!strings.HasPrefix(path, "/raft"))
		}
		if !exempt.Load() {
			p.mu.Lock()
			gate := p.frozen
			p.mu.Unlock()
			<-gate
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				dst.Close()
			}
			return
		}
	}
}

// freeze stops forwarding, for good.
func (p *peerProxy) freeze() {
	p.mu.Lock()
	p.frozen = make(chan struct{})
	p.mu.Unlock()
}

func (p *peerProxy) close() {
	p.l.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}
