package deploy

import (
	"context"
	"time"

	"github.com/keystone-nix/keystone/internal/newboot"
	"github.com/keystone-nix/keystone/internal/sshx"
)

// ErrNoReturn means the host did not come back in time.
var ErrNoReturn = newboot.ErrNoReturn

// WaitForNewBoot waits until the host answers with the pinned key (o's
// HostKeys), the expected hostname and a boot id other than before.
// nixos-anywhere returns when the host goes down; this is the other half.
func WaitForNewBoot(ctx context.Context, o sshx.Options, hostname, before string, wait time.Duration) error {
	return newboot.Wait(ctx, o, hostname, before, wait)
}
