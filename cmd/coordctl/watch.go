package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	coordinatorv1 "github.com/coordinator/coordinator/proto/coordinator/v1"
)

// watchUpdate follows an update until it finishes: recv returns each new
// state (io.EOF when the stream ends). On a terminal it redraws one progress
// line; otherwise it prints a line per change. With json it prints each
// state as one JSON object per line.
func watchUpdate(w io.Writer, recv func() (*coordinatorv1.Update, error), terminal, json bool, now func() time.Time) error {
	var last *coordinatorv1.Update
	for {
		u, err := recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if terminal && last != nil {
				fmt.Fprintln(w)
			}
			return err
		}
		last = u
		switch {
		case json:
			if err := writeJSONLine(w, u); err != nil {
				return err
			}
		case terminal:
			fmt.Fprintf(w, "\r\033[K%s", progressLine(u, now()))
		default:
			fmt.Fprintln(w, progressLine(u, now()))
		}
	}
	if last == nil {
		return errors.New("the watch ended before any state arrived")
	}
	if json {
		return outcome(last)
	}
	if terminal {
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, summaryLine(last, now()))
	if !finishedPhase(last.GetPhase()) {
		return fmt.Errorf("the watch ended while the update was %s", phaseName(last.GetPhase()))
	}
	return outcome(last)
}

// runWatch opens WatchUpdate for id and follows it: with no --timeout (an
// update may take long), for at most timeout if it is positive. Ctrl-C and
// the timeout stop the watching, not the update; the error says so.
func (c *cli) runWatch(cmd *cobra.Command, id string, timeout time.Duration) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := cmd.Context(), context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	}
	defer cancel()
	stream, err := coordinatorv1.NewAdminServiceClient(conn).WatchUpdate(ctx, &coordinatorv1.WatchUpdateRequest{Id: id})
	if err == nil {
		err = watchUpdate(c.stdout, stream.Recv, isTerminal(c.stdout), c.opts.output == outputJSON, time.Now)
	}
	switch {
	case err == nil || errors.Is(err, errUpdateFailed):
		return err
	case cmd.Context().Err() != nil:
		return fmt.Errorf("stopped watching update %s; it goes on (coordctl status %s -w follows it, coordctl abort %s stops it)", id, id, id)
	case ctx.Err() != nil || (timeout > 0 && status.Code(err) == codes.DeadlineExceeded):
		// The server may end the call at its deadline before the
		// client's own timer has fired.
		return fmt.Errorf("stopped watching update %s after --watch-timeout %s; it goes on (coordctl status %s -w follows it, coordctl abort %s stops it)",
			id, timeout, id, id)
	}
	return err
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
