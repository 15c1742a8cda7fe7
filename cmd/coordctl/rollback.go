package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// rollbackHistory is how many updates of the service rollback reads to
// find the last one that finished DONE (the server's most).
const rollbackHistory = 1000

func init() { registerCommand(newRollbackCmd) }

func newRollbackCmd(c *cli) *cobra.Command {
	var sf startFlags
	cmd := &cobra.Command{
		Use:   "rollback SERVICE",
		Short: "Start an update of a service back to the version it ran before",
		Long: `Start a new update of SERVICE back to the version it ran before the last
update that finished DONE (the one that made its default version what it is
now), with that update's strategy unless --strategy says otherwise.

It is refused, and nothing starts, when SERVICE is being updated (abort that
update with coordctl abort ID: rollback does not stop an update in flight),
when no DONE update led to its default version, or when the version to go
back to has no registered, connected instance.

The other flags are update's: --dry-run says what would happen, --watch
(-w) prints the id and follows the update.`,
		Example: `  coordctl rollback auth-service
  coordctl rollback auth-service --strategy=wf --timeout 1m -w
  coordctl rollback auth-service --dry-run`,
		Args: exactArgs("SERVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := sf.check()
			if err != nil {
				return err
			}
			service := args[0]
			s, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.ServiceState, error) {
				return cl.GetService(ctx, &coordinatorv1.GetServiceRequest{Service: service, InstanceLimit: 1, TxnLimit: 1})
			})
			if err != nil {
				return err
			}
			h, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.ListUpdatesResponse, error) {
				return cl.ListUpdates(ctx, &coordinatorv1.ListUpdatesRequest{Service: service, Limit: rollbackHistory})
			})
			if err != nil {
				return err
			}
			undo, err := rollbackOf(s, h.GetUpdates())
			if err != nil {
				return err
			}
			if k == coordinatorv1.Strategy_STRATEGY_UNSPECIFIED {
				k = undo.GetStrategy()
			}
			if c.opts.output != outputJSON {
				verb := "Rolling back"
				if sf.dryRun {
					verb = "A rollback would take"
				}
				fmt.Fprintf(c.stdout, "%s %s from %s back to %s (undoing update %s) with %s.\n",
					verb, service, undo.GetToVersion(), undo.GetFromVersion(), undo.GetId(), strategyName(k))
			}
			return c.startUpdate(cmd, sf.request(service, undo.GetFromVersion(), k), &sf)
		},
	}
	sf.add(cmd.Flags(), "wf, bf, cv or naive (default: the strategy of the update rolled back)")
	return cmd
}

// rollbackOf returns the update a rollback of s undoes: the newest of
// history (newest first) that finished DONE to the version s runs by
// default. It refuses clearly when s is being updated, when there is none,
// or when the version it came from has no connected instance.
func rollbackOf(s *coordinatorv1.ServiceState, history []*coordinatorv1.Update) (*coordinatorv1.Update, error) {
	name, def := s.GetName(), s.GetDefaultVersion()
	if u := s.GetUpdate(); u != nil {
		return nil, fmt.Errorf("cannot roll back %s: it is being updated by %s (%s -> %s, %s); abort that with coordctl abort %s",
			name, u.GetId(), u.GetFromVersion(), u.GetToVersion(), phaseName(u.GetPhase()), u.GetId())
	}
	var undo *coordinatorv1.Update
	for _, u := range history {
		if u.GetPhase() == coordinatorv1.Phase_PHASE_DONE && u.GetToVersion() == def {
			undo = u
			break
		}
	}
	if undo == nil {
		return nil, fmt.Errorf("nothing to roll back: no update of %s that finished DONE to %s, its default version, is kept (coordctl history %s)",
			name, def, name)
	}
	prev := undo.GetFromVersion()
	var v *coordinatorv1.VersionState
	for _, x := range s.GetVersions() {
		if x.GetVersion() == prev {
			v = x
		}
	}
	switch {
	case v == nil || v.GetInstances() == 0:
		return nil, fmt.Errorf("cannot roll back %s to %s (the version before update %s): no instance of %s@%s is registered (registered: %s); start one, then roll back again",
			name, prev, undo.GetId(), name, prev, registeredVersions(s))
	case v.GetConnected() == 0:
		return nil, fmt.Errorf("cannot roll back %s to %s (the version before update %s): none of its %s is connected now",
			name, prev, undo.GetId(), plural(int(v.GetInstances()), "instance", "instances"))
	}
	return undo, nil
}
