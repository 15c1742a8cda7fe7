// Package benchproc runs a benchmark's coordinator in a process of its own,
// as it is deployed: the benchmark's binary re-executed with the arguments
// it is given (its "-serve DIR" mode), which prints one line (its
// addresses) once it leads.
package benchproc

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// Proc is a child process started by Start.
type Proc struct {
	cmd *exec.Cmd
	// Line is the first line the child printed, trimmed.
	Line string
}

// Start re-executes this binary with args, its stderr going to ours, and
// returns once the child printed its first line; a child that ends first
// is an error.
func Start(args ...string) (*Proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("benchproc: child process: %w", err)
	}
	return &Proc{cmd: cmd, Line: strings.TrimSpace(line)}, nil
}

// Stop sends SIGTERM and waits for the child to exit.
func (p *Proc) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Wait()
}

// RSSMB is the child's resident set in MB (0 where /proc cannot tell).
func (p *Proc) RSSMB() int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024
		}
	}
	return 0
}
