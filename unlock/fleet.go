package unlock

import (
	"context"
	"errors"
	"io"

	"github.com/keystone-nix/keystone/fleet"
	"github.com/keystone-nix/keystone/internal/exit"
)

// Fleet unlocks each host in turn (a password typed at the terminal is
// asked for one host at a time) and returns each host's error, named.
func Fleet(ctx context.Context, hosts []fleet.Host, o Options, w io.Writer) error {
	var errs []error
	for i := range hosts {
		h := &hosts[i]
		err := h.Err
		if err != nil {
			err = exit.With(ExitRefused, err)
		} else {
			var t Target
			if t, err = TargetOf(h, o); err == nil {
				_, err = Run(ctx, t, o, w)
			}
		}
		errs = append(errs, fleet.Named(h.Name, err))
	}
	return errors.Join(errs...)
}
