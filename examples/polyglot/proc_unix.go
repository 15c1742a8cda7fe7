//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

// killGroup kills the process group the process leads.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
