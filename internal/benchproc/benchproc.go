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
	"runtime"
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

// CPUSeconds is the CPU time (user and system) the child has used so far
// (0 where /proc cannot tell).
func (p *Proc) CPUSeconds() float64 { return procCPUSeconds(p.cmd.Process.Pid) }

// procCPUSeconds reads utime and stime of pid from /proc/pid/stat.
func procCPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command may hold spaces: fields start after its closing paren.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux we run on.
const clockTicks = 100

// MachineLoad measures, between Start and Stop, how busy the machine's
// CPUs were and how much of that was neither this process nor the child:
// benchmarks on a shared machine report it next to their latencies.
type MachineLoad struct {
	p                *Proc
	busy0, ours0     float64
	total0           float64
	busy, ours, wall float64
}

// StartLoad starts measuring.
func (p *Proc) StartLoad() *MachineLoad {
	m := &MachineLoad{p: p}
	m.busy0, m.total0 = cpuStat()
	m.ours0 = procCPUSeconds(os.Getpid()) + p.CPUSeconds()
	return m
}

// String stops measuring (once) and says, in cores, how busy the machine
// was and how much of it was others.
func (m *MachineLoad) String() string {
	if m.wall == 0 {
		busy, total := cpuStat()
		m.busy, m.wall = busy-m.busy0, total-m.total0
		m.ours = procCPUSeconds(os.Getpid()) + m.p.CPUSeconds() - m.ours0
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
	for i, v := range f[1:] {
		x, _ := strconv.ParseFloat(v, 64)
		total += x
		if i != 3 && i != 4 { // idle, iowait
			busy += x
		}
	}
	return busy / clockTicks, total / clockTicks
}
