// Package benchproc runs a benchmark's coordinator in a process of its own,
// as it is deployed: the benchmark's binary re-executed with the arguments
// it is given (its "-serve DIR" mode), which prints one line (its
// addresses) once it leads.
package benchproc

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
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
func (p *Proc) CPU() (time.Duration, bool) { return procCPU(p.cmd.Process.Pid) }

// CPUSeconds is the CPU time (user and system) the child has used so far
// (0 where /proc cannot tell).
func (p *Proc) CPUSeconds() float64 {
	d, _ := p.CPU()
	return d.Seconds()
}

// procCPU reads utime and stime of pid from /proc/pid/stat.
func procCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
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

// MachineLoad measures, between Start and Stop, how busy the machine's
// CPUs were and how much of that was neither this process nor the child:
// benchmarks on a shared machine report it next to their latencies.
type MachineLoad struct {
	p                *Proc
	busy0, ours0     float64
	total0           float64
	busy, ours, wall float64
}

// ownCPUSeconds is the CPU time this process has used so far.
func ownCPUSeconds() float64 {
	d, _ := procCPU(os.Getpid())
	return d.Seconds()
}

// StartLoad starts measuring.
func (p *Proc) StartLoad() *MachineLoad {
	m := &MachineLoad{p: p}
	m.busy0, m.total0 = cpuStat()
	m.ours0 = ownCPUSeconds() + p.CPUSeconds()
	return m
}

// String stops measuring (once) and says, in cores, how busy the machine
// was and how much of it was others.
func (m *MachineLoad) String() string {
	if m.wall == 0 {
		busy, total := cpuStat()
		m.busy, m.wall = busy-m.busy0, total-m.total0
		m.ours = ownCPUSeconds() + m.p.CPUSeconds() - m.ours0
	}
	if m.wall <= 0 {
		return "machine load unknown"
	}
	n := float64(runtime.NumCPU())
	wall := m.wall / n // seconds
	return fmt.Sprintf("cpu busy %.2f of %.0f cores, of which others %.2f", m.busy/wall, n, (m.busy-m.ours)/wall)
}

// cpuStat returns the busy and total CPU seconds of all CPUs from /proc/stat.
func cpuStat() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	hz := float64(clockTicks())
	for i, v := range f[1:] {
		x, _ := strconv.ParseFloat(v, 64)
		total += x
		if i != 3 && i != 4 { // idle, iowait
			busy += x
		}
	}
	return busy / hz, total / hz
}

// Exec starts another program (a built coordsidecar) as a Proc: its
// output goes to our stderr, it is killed if this process dies, and it is
// not waited for (the caller polls its own readiness). Line is empty.
func Exec(path string, args ...string) (*Proc, error) {
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &Proc{cmd: cmd}, nil
}

// FreeAddr returns a loopback host:port that was free a moment ago, for a
// child process that takes its address as a flag (coordinatord,
// coordsidecar). Another process may take it first: the child then fails
// to listen, and the benchmark with it.
func FreeAddr() (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer lis.Close()
	return lis.Addr().String(), nil
}
