package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerCommand(newServiceCmd) }

func newServiceCmd(c *cli) *cobra.Command {
	var instances, txns uint32
	cmd := &cobra.Command{
		Use:   "service NAME",
		Short: "Show one service: its versions, instances, live transactions and updates",
		Long: `Show the service NAME: the version calls go to by default, whether it is
free, the update in progress with its phase and what it waits for, the last
update that finished, then each version with its instances and the live
transactions that used it.

-o wide adds the instances' registration times and leaves lines uncut.`,
		Example: `  coordctl service auth-service
  coordctl service auth-service --txns 100 -o wide`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &coordinatorv1.GetServiceRequest{Service: args[0], InstanceLimit: instances, TxnLimit: txns}
			s, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.ServiceState, error) {
				return cl.GetService(ctx, req)
			})
			if err != nil {
				return err
			}
			return c.print(s, func(w io.Writer) error { return renderService(w, s, c.wide(), time.Now()) })
		},
	}
	f := cmd.Flags()
	f.Uint32Var(&instances, "instances", 0, "most instances to list (0: the server's default, 100; at most 10000)")
	f.Uint32Var(&txns, "txns", 0, "most transaction ids to list per version (0: the server's default, 20; at most 1000)")
	return cmd
}

// renderService writes one service in detail; unless wide, every line fits
// a terminal.
func renderService(w io.Writer, s *coordinatorv1.ServiceState, wide bool, now time.Time) error {
	width := termWidth
	if wide {
		width = 0
	}
	line := func(label, value string) { writeField(w, 13, label, value, width) }
	line("Service", s.GetName())
	line("Default", s.GetDefaultVersion())
	free := "yes"
	if !s.GetFree() {
		free = "no: " + plural(int(s.GetBlocking()), "transaction blocks it", "transactions block it")
		if m := s.GetResyncMissing(); m > 0 {
			free += fmt.Sprintf(", %s not back since the failover", plural(int(m), "session", "sessions"))
		}
	}
	line("Free", free)
	line("Transactions", fmt.Sprintf("%d live", s.GetLiveTransactions()))
	if u := s.GetUpdate(); u != nil {
		line("Update", updateCell(u, now))
		if wf := u.GetProgress().GetWaitingFor(); wf != "" {
			line("Waiting for", wf)
		}
	} else {
		line("Update", "none in progress")
	}
	if u := s.GetLastUpdate(); u != nil {
		last := lastUpdateCell(u, now)
		if u.GetReason() != "" {
			last += ": " + u.GetReason()
		}
		line("Last update", last)
	}
	if len(s.GetVersions()) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	t := newTable(w, "VERSION", "DEFAULT", "INSTANCES", "CONNECTED", "TXNS")
	for _, v := range s.GetVersions() {
		t.row(fit(v.GetVersion(), width/4), yesNo(v.GetDefault()), fmt.Sprint(v.GetInstances()),
			fmt.Sprint(v.GetConnected()), fmt.Sprint(v.GetLiveTransactions()))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if err := renderInstances(w, s, wide); err != nil {
		return err
	}
	return renderVersionTxns(w, s, wide)
}

// renderInstances writes the instances of every version, if any is listed.
func renderInstances(w io.Writer, s *coordinatorv1.ServiceState, wide bool) error {
	listed, total := 0, 0
	for _, v := range s.GetVersions() {
		listed += len(v.GetInstanceList())
		total += int(v.GetInstances())
	}
	if listed == 0 {
		return nil
	}
	fmt.Fprintln(w)
	headers := []string{"INSTANCE", "VERSION", "CONNECTED", "ADDRESS"}
	if wide {
		headers = append(headers, "REGISTERED")
	}
	t := newTable(w, headers...)
	for _, v := range s.GetVersions() {
		for _, in := range v.GetInstanceList() {
			if wide {
				t.row(in.GetInstanceId(), v.GetVersion(), yesNo(in.GetConnected()), in.GetAddress(), formatTime(in.GetRegisteredAt()))
				continue
			}
			t.row(fit(in.GetInstanceId(), 28), fit(v.GetVersion(), 12), yesNo(in.GetConnected()), fit(in.GetAddress(), 24))
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	if listed < total {
		fmt.Fprintf(w, "Showing %d of %d instances; raise --instances to see more.\n", listed, total)
	}
	return nil
}

// renderVersionTxns writes the live transactions listed per version.
func renderVersionTxns(w io.Writer, s *coordinatorv1.ServiceState, wide bool) error {
	listed, more := 0, false
	for _, v := range s.GetVersions() {
		listed += len(v.GetTransactions())
		more = more || len(v.GetTransactions()) < int(v.GetLiveTransactions())
	}
	if listed == 0 {
		return nil
	}
	fmt.Fprintln(w)
	t := newTable(w, "VERSION", "LIVE TRANSACTION")
	for _, v := range s.GetVersions() {
		for _, id := range v.GetTransactions() {
			if wide {
				t.row(v.GetVersion(), id)
				continue
			}
			t.row(fit(v.GetVersion(), 12), fit(id, 64))
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	if more {
		fmt.Fprintln(w, "Not every live transaction is listed; raise --txns to see more.")
	}
	return nil
}
