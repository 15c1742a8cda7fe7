// Package benchproc runs a benchmark's coordinator in a process of its own,
// as it is deployed: the benchmark's binary re-executed with the arguments
// it is given (its "-serve DIR" mode), which prints one line (its
// addresses) once it leads.
package benchproc

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a child process started by Start.
type Proc struct {
	cmd *exec.Cmd
	// Line is the first line the child printed, trimmed.
	Line string
}

// Start re-executes this binary with args, its stderr going to ours, and
// returns once the child printed its first line; a child that ends first
// is an error. The child is killed if this process dies without stopping
// it (a panic, log.Fatal, a signal): on Linux the kernel sends it SIGKILL
// when its parent goes (PR_SET_PDEATHSIG).
func Start(args ...string) (*Proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
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

// StopWithin sends SIGTERM and waits up to d for the child to exit, then
// kills it: a child too loaded to stop gracefully does not hold the
// benchmark. It reports whether the child had to be killed.
func (p *Proc) StopWithin(d time.Duration) (killed bool) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		_ = p.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
		return false
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-done
		return true
	}
}

// Pid is the child's process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

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

// CPU is the CPU time the child has used so far, user and system, from
// /proc/<pid>/stat (utime + stime, in clock ticks of AT_CLKTCK); false
// where /proc cannot tell.
func (p *Proc) CPU() (time.Duration, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, false
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// count fields after its closing one. utime and stime are fields 14
	// and 15, so the 12th and 13th after it.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * time.Second / time.Duration(clockTicks()), true
}

// clockTicks is the kernel's USER_HZ (AT_CLKTCK in this process's
// auxiliary vector), 100 where it cannot be read.
func clockTicks() uint64 {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		return 100
	}
	const atClkTck = 17
	for len(b) >= 16 {
		k, v := binary.NativeEndian.Uint64(b), binary.NativeEndian.Uint64(b[8:])
		if k == atClkTck && v > 0 {
			return v
		}
		if k == 0 {
			break
		}
		b = b[16:]
	}
	return 100
}
