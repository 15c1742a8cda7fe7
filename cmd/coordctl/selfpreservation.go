package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

func init() { registerCommand(newSelfPreservationCmd) }

func newSelfPreservationCmd(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "selfpreservation [status|off]",
		Short: "Show self-preservation, or end it",
		Long: `Self-preservation starts when the leases of most sidecar sessions expire
within a short window: a partition around the coordinator is then more likely
than that many dead services. The coordinator keeps those sessions'
transactions (as legacy), queues their expiry and pauses every switch of every
update; BF calls that would wait for a switch run on the old version. A queued
session that registers again is taken off the queue; one that has not within
the grace after its expiry is dropped. The mode ends when the queue is empty.

status (the default) shows whether the mode is active, since when, the queued
sessions and the settings. off ends the mode at once: every queued session is
dropped as expired and its transactions end; it fails if the mode is not
active.`,
		Example: `  coordctl selfpreservation
  coordctl selfpreservation off`,
		Aliases: []string{"sp"},
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageErrorf("%s: unexpected argument %q (usage: %s)", cmd.Name(), args[1], cmd.UseLine())
			}
			if len(args) == 1 && args[0] != "status" && args[0] != "off" {
				return usageErrorf("%s: unknown action %q: want status or off", cmd.Name(), args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && args[0] == "off" {
				sp, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.SelfPreservation, error) {
					return cl.EndSelfPreservation(ctx, &coordinatorv1.EndSelfPreservationRequest{})
				})
				if err != nil {
					return err
				}
				return c.print(sp, func(w io.Writer) error {
					fmt.Fprintln(w, "Self-preservation ended: the queued sessions were dropped and their transactions ended.")
					fmt.Fprintln(w)
					return renderSelfPreservation(w, sp, time.Now())
				})
			}
			sp, err := callAdmin(c, cmd, func(ctx context.Context, cl coordinatorv1.AdminServiceClient) (*coordinatorv1.SelfPreservation, error) {
				return cl.GetSelfPreservation(ctx, &coordinatorv1.GetSelfPreservationRequest{})
			})
			if err != nil {
				return err
			}
			return c.print(sp, func(w io.Writer) error { return renderSelfPreservation(w, sp, time.Now()) })
		},
	}
}

// renderSelfPreservation writes the mode, its queue and its settings.
func renderSelfPreservation(w io.Writer, sp *coordinatorv1.SelfPreservation, now time.Time) error {
	state := "inactive"
	if sp.GetActive() {
		state = "ACTIVE"
		if s := sp.GetSince(); s != nil {
			state += fmt.Sprintf(" since %s (%s)", formatTime(s), now.Sub(s.AsTime()).Round(time.Second))
		}
	}
	queued := sp.GetQueuedSessions()
	fmt.Fprintf(w, "Self-preservation:  %s\n", state)
	fmt.Fprintf(w, "Queued sessions:    %d", len(queued))
	if len(queued) > 0 {
		fmt.Fprintf(w, " (%s)", cell(strings.Join(queued, ", ")))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Recent expiries:    %d within the window\n", sp.GetRecentExpiries())
	fmt.Fprintf(w, "Activations:        %d\n", sp.GetActivations())
	_, err := fmt.Fprintf(w, "Settings:           window %s, ratio %s, min %d, grace %s\n",
		cell(formatDuration(sp.GetWindow())), strconv.FormatFloat(sp.GetRatio(), 'g', -1, 64),
		sp.GetMinCount(), cell(formatDuration(sp.GetGrace())))
	return err
}
