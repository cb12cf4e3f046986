package deploy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keystone-nix/keystone/internal/remote"
	"github.com/keystone-nix/keystone/internal/sshx"
)

// ErrNoReturn means the host did not come back in time.
var ErrNoReturn = errors.New("the host did not come back")

const waitPoll = 2 * time.Second

// WaitForNewBoot waits until the host answers with the pinned key (o's
// HostKeys), the expected hostname and a boot id other than before.
// nixos-anywhere returns when the host goes down; this is the other half.
func WaitForNewBoot(ctx context.Context, o sshx.Options, hostname, before string, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	last := "no answer yet"
	o.Timeout = 5 * time.Second
	for {
		if seen, ok := newBoot(ctx, o, hostname, before); ok {
			return nil
		} else if seen != "" {
			last = seen
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w within %s: %s", ErrNoReturn, wait, last)
		case <-time.After(waitPoll):
		}
	}
}

// newBoot says whether the host is up in its new system, or what it saw.
func newBoot(ctx context.Context, o sshx.Options, hostname, before string) (string, bool) {
	c, err := sshx.Dial(ctx, o)
	if err != nil {
		return err.Error(), false
	}
	defer c.Close()
	r := remote.New(c.Client, o.User != "root", 10*time.Second)
	out := r.Run(ctx, "cat /proc/sys/kernel/hostname /proc/sys/kernel/random/boot_id; cut -d' ' -f22 /proc/1/stat")
	f := strings.Fields(out.Stdout)
	if out.Err != nil || len(f) != 3 {
		return "connected, but could not read its hostname and boot id", false
	}
	switch boot := f[1] + "/" + f[2]; {
	case boot == before:
		return "the host still runs the boot it had before the install", false
	case f[0] != hostname:
		return fmt.Sprintf("the host answers with hostname %q, want %q", f[0], hostname), false
	}
	return "", true
}
