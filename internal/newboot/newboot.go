// Package newboot tells one boot of a host from the next over SSH, and
// waits for the next: deploy after nixos-anywhere reboots into the
// installed system, switch after a reboot into a new generation.
package newboot

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

// Command prints the host's name, then its boot identity: the boot id and
// PID 1's start time, which tells container boots apart too (some
// container managers pass the kernel's boot id through).
const Command = "cat /proc/sys/kernel/hostname /proc/sys/kernel/random/boot_id; cut -d' ' -f22 /proc/1/stat"

const poll = 2 * time.Second

// Identity is the host's boot identity, "BOOTID/START", and its hostname.
func Identity(ctx context.Context, r *remote.Runner) (boot, hostname string, err error) {
	out := r.Run(ctx, Command)
	f := strings.Fields(out.Stdout)
	if out.Err != nil || len(f) != 3 {
		return "", "", fmt.Errorf("could not read its hostname and boot id: %v", out.Err)
	}
	return f[1] + "/" + f[2], f[0], nil
}

// Wait waits until the host answers with the pinned key (o's HostKeys),
// the expected hostname and a boot identity other than before.
func Wait(ctx context.Context, o sshx.Options, hostname, before string, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	last := "no answer yet"
	o.Timeout = 5 * time.Second
	for {
		if seen, ok := booted(ctx, o, hostname, before); ok {
			return nil
		} else if seen != "" {
			last = seen
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w within %s: %s", ErrNoReturn, wait, last)
		case <-time.After(poll):
		}
	}
}

// booted says whether the host is up in a new boot, or what it saw.
func booted(ctx context.Context, o sshx.Options, hostname, before string) (string, bool) {
	c, err := sshx.Dial(ctx, o)
	if err != nil {
		return err.Error(), false
	}
	defer c.Close()
	boot, name, err := Identity(ctx, remote.New(c.Client, o.User != "root", 10*time.Second))
	switch {
	case err != nil:
		return "connected, but " + err.Error(), false
	case boot == before:
		return "the host still runs the boot it had before", false
	case name != hostname:
		return fmt.Sprintf("the host answers with hostname %q, want %q", name, hostname), false
	}
	return "", true
}
