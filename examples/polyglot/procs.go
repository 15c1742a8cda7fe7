package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a child process (an application or a coordsidecar) in a process
// group of its own: Ctrl-C in a terminal reaches the demo only, which then
// stops its children in order, and killing the group leaves nothing behind.
// Its output (stdout and stderr) goes to a log file, line by line.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed once it has exited and its output is read
	waitErr error

	mu      sync.Mutex
	watch   func(string) bool
	matched chan string // the first line watch accepted
}

// startProc starts argv in dir with env added to the demo's environment.
// The first line of its output for which watch returns true is sent on
// p.matched.
func startProc(name, dir, logPath string, env []string, watch func(string) bool, argv ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = sysProcAttr()
	p := &proc{name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{}), watch: watch, matched: make(chan string, 1)}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	w.Close() // the child holds its copy: EOF when it exits
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer logf.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			p.mu.Lock()
			if p.watch != nil && p.watch(line) {
				p.watch = nil
				p.matched <- line
			}
			p.mu.Unlock()
		}
		_, _ = io.Copy(logf, r) // a line too long for the scanner
		r.Close()
	}()
	go func() {
		err := cmd.Wait()
		<-read
		p.waitErr = err
		close(p.exited)
	}()
	return p, nil
}

// await returns the line watch accepted, or an error when the process
// exits first or timeout passes (the error quotes the end of its log).
func (p *proc) await(ctx context.Context, timeout time.Duration) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line := <-p.matched:
		return line, nil
	case <-p.exited:
		select {
		case line := <-p.matched:
			return line, nil
		default:
		}
		return "", fmt.Errorf("%s exited (%v) before it was ready:\n%s", p.name, p.waitErr, p.tail(20))
	case <-t.C:
		return "", fmt.Errorf("%s not ready within %v:\n%s", p.name, timeout, p.tail(20))
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// tail returns the last n lines of its log, indented.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// stop asks the process to stop with SIGTERM and waits for it at most
// grace, then kills its process group, whatever it left running. It is
// safe to call more than once.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.exited:
		killGroup(p.cmd) // anything it left behind
		return
	default:
	}
	if grace > 0 {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(grace):
		}
	}
	killGroup(p.cmd)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
	}
}

// freePorts returns n loopback ports free now. Another process may take
// one before it is bound: the caller retries with new ones when a bind
// fails.
func freePorts(n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

// errAddrInUse is a coordsidecar that could not bind a port picked free.
var errAddrInUse = errors.New("address already in use")
